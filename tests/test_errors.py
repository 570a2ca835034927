"""SPEC.md "Errors": every bad input raises TypeError (wrong kind or dtype) or ValueError (wrong
shape, axis, eps, momentum, overlap) naming the argument, and nothing has been written: out,
gamma, the moving statistics and the gradient buffers are bit-identical to before the call."""

import numpy as np
import pytest

import pybn
from conftest import poisoned, resolve_dtype

SHAPE = (4, 3, 5)
CHANNELS = 3


def forward_case(rng, dtype=np.float32):
    dtype = np.dtype(dtype)
    pdtype = np.float32 if dtype.itemsize == 2 else dtype
    return {
        "data": rng.standard_normal(SHAPE).astype(dtype),
        "gamma": rng.uniform(0.5, 1.5, CHANNELS).astype(pdtype),
        "beta": rng.uniform(-1, 1, CHANNELS).astype(pdtype),
        "moving_mean": rng.uniform(-1, 1, CHANNELS).astype(pdtype),
        "moving_var": rng.uniform(0.5, 2, CHANNELS).astype(pdtype),
        "out": poisoned(SHAPE, dtype),
        "flags": {"fix_gamma": True, "training": True, "output_mean_var": True},
    }


def backward_case(rng, dtype=np.float32):
    dtype = np.dtype(dtype)
    pdtype = np.float32 if dtype.itemsize == 2 else dtype
    return {
        "dy": rng.standard_normal(SHAPE).astype(dtype),
        "data": rng.standard_normal(SHAPE).astype(dtype),
        "gamma": rng.uniform(0.5, 1.5, CHANNELS).astype(pdtype),
        "mean": rng.uniform(-1, 1, CHANNELS).astype(pdtype),
        "invstd": rng.uniform(0.5, 2, CHANNELS).astype(pdtype),
        "dx": poisoned(SHAPE, dtype),
        "dgamma": poisoned(CHANNELS, pdtype),
        "dbeta": poisoned(CHANNELS, pdtype),
        "flags": {"fix_gamma": False, "training": True},
    }


def call_forward(case):
    return pybn.batch_norm(case["data"], case["gamma"], case["beta"], case["moving_mean"],
                           case["moving_var"], out=case["out"], **case["flags"])


def call_backward(case):
    return pybn.batch_norm_backward(case["dy"], case["data"], case["gamma"], case["mean"],
                                    case["invstd"], dx=case["dx"], dgamma=case["dgamma"],
                                    dbeta=case["dbeta"], **case["flags"])


def arrays_of(case):
    """Every array the call can see, plus the bases of views (overlap cases build their
    arguments as views of one buffer)."""
    arrays = []
    for name, value in case.items():
        if isinstance(value, np.ndarray):
            arrays.append((name, value))
            if value.base is not None and isinstance(value.base, np.ndarray):
                arrays.append((name + ".base", value.base))
    return arrays


def assert_rejected_and_untouched(call, case, error, argument):
    before = [(name, array.copy()) for name, array in arrays_of(case)]
    with pytest.raises(error, match=argument):
        call(case)
    for (name, after), (_, copy) in zip(arrays_of(case), before):
        assert np.array_equal(after, copy, equal_nan=True), f"{name} changed on error"
        assert after.tobytes() == copy.tobytes(), f"{name} changed on error (bits)"


# --- forward -------------------------------------------------------------------------------

def _set(**changes):
    def mutate(case):
        for key, value in changes.items():
            if key in ("eps", "momentum", "axis", "training", "fix_gamma", "use_global_stats"):
                case["flags"][key] = value
            else:
                case[key] = value(case) if callable(value) else value
    return mutate


def _overlapping(case, first, second, offset):
    """Rebuild `first` and `second` as views of one buffer, `second` starting `offset`
    elements after `first` (offset 0 and equal shapes: the same memory)."""
    a, b = case[first], case[second]
    storage = np.zeros(max(a.size, offset + b.size), dtype=a.dtype)
    storage[:a.size] = a.ravel()
    case[first] = storage[:a.size].reshape(a.shape)
    case[second] = storage[offset:offset + b.size].reshape(b.shape)
    case[second][...] = b


def _overlap(first, second, offset):
    return lambda case: _overlapping(case, first, second, offset)


def _read_only(name):
    def mutate(case):
        case[name].flags.writeable = False
    return mutate


def _non_dense(name):
    def mutate(case):
        wide = np.full(case[name].shape[:-1] + (2 * case[name].shape[-1],), np.nan,
                       dtype=case[name].dtype)
        case[name] = wide[..., ::2]
    return mutate


FORWARD_ERRORS = {
    # wrong kind or dtype -> TypeError naming the argument
    "data_int32": (TypeError, "data", _set(data=lambda c: c["data"].astype(np.int32),
                                           out=None)),
    "data_not_an_array": (TypeError, "data", _set(data=object(), out=None)),
    "gamma_float64": (TypeError, "gamma", _set(gamma=lambda c: c["gamma"].astype(np.float64))),
    "beta_float16": (TypeError, "beta", _set(beta=lambda c: c["beta"].astype(np.float16))),
    "moving_mean_float64": (TypeError, "moving_mean",
                            _set(moving_mean=lambda c: c["moving_mean"].astype(np.float64))),
    "moving_var_int32": (TypeError, "moving_var",
                         _set(moving_var=lambda c: c["moving_var"].astype(np.int32))),
    "out_float64": (TypeError, "out", _set(out=poisoned(SHAPE, np.float64))),
    "out_not_an_array": (TypeError, "out", _set(out=object())),
    # wrong shape -> ValueError
    "gamma_too_long": (ValueError, "gamma", _set(gamma=np.ones(CHANNELS + 1, np.float32))),
    "beta_2d": (ValueError, "beta", _set(beta=np.zeros((CHANNELS, 1), np.float32))),
    "moving_mean_too_short": (ValueError, "moving_mean",
                              _set(moving_mean=np.zeros(CHANNELS - 1, np.float32))),
    "moving_var_0d": (ValueError, "moving_var", _set(moving_var=np.ones((), np.float32))),
    "out_wrong_shape": (ValueError, "out", _set(out=poisoned((4, 3, 6), np.float32))),
    "out_non_dense": (ValueError, "out", _non_dense("out")),
    "data_0d": (ValueError, "data", _set(data=np.ones((), np.float32), out=None)),
    "no_items_in_training": (ValueError, "data",
                             _set(data=np.zeros((0, 3, 5), np.float32),
                                  out=poisoned((0, 3, 5), np.float32))),
    # axis, eps, momentum
    "axis_too_large": (ValueError, "axis", _set(axis=3)),
    "axis_too_negative": (ValueError, "axis", _set(axis=-4)),
    "axis_far_out": (ValueError, "axis", _set(axis=1000)),
    "eps_negative": (ValueError, "eps", _set(eps=-1e-3)),
    "eps_nan": (ValueError, "eps", _set(eps=float("nan"))),
    "eps_inf": (ValueError, "eps", _set(eps=float("inf"))),
    "momentum_negative": (ValueError, "momentum", _set(momentum=-0.1)),
    "momentum_above_one": (ValueError, "momentum", _set(momentum=1.1)),
    "momentum_nan": (ValueError, "momentum", _set(momentum=float("nan"))),
    "momentum_inf": (ValueError, "momentum", _set(momentum=float("inf"))),
    "eps_not_a_number": (TypeError, "eps", _set(eps="small")),
    "momentum_none": (TypeError, "momentum", _set(momentum=None)),
    "axis_float": (TypeError, "axis", _set(axis=1.0)),
    # overlap between an output and an input (other than out is data exactly)
    "out_overlaps_data": (ValueError, "out|data", _overlap("data", "out", 7)),
    "out_overlaps_gamma": (ValueError, "out|gamma", _overlap("out", "gamma", 58)),
    "moving_var_overlaps_moving_mean": (ValueError, "moving_mean|moving_var",
                                        _overlap("moving_mean", "moving_var", 2)),
    "moving_var_is_moving_mean": (ValueError, "moving_mean|moving_var",
                                  _overlap("moving_mean", "moving_var", 0)),
    "moving_mean_inside_data": (ValueError, "moving_mean|data",
                                _overlap("data", "moving_mean", 10)),
    "moving_var_inside_out": (ValueError, "moving_var|out", _overlap("out", "moving_var", 30)),
    "gamma_is_beta_with_fix_gamma": (ValueError, "gamma|beta", _overlap("gamma", "beta", 0)),
    "gamma_is_moving_mean": (ValueError, "gamma|moving_mean",
                             _overlap("gamma", "moving_mean", 0)),
    # buffers the call must write but cannot
    "read_only_out": ((TypeError, ValueError), "out", _read_only("out")),
    "read_only_moving_mean": ((TypeError, ValueError), "moving_mean", _read_only("moving_mean")),
    "read_only_moving_var": ((TypeError, ValueError), "moving_var", _read_only("moving_var")),
    "read_only_gamma_with_fix_gamma": ((TypeError, ValueError), "gamma", _read_only("gamma")),
}


@pytest.mark.parametrize("name", list(FORWARD_ERRORS))
def test_forward_rejects(rng, name):
    error, argument, mutate = FORWARD_ERRORS[name]
    case = forward_case(rng)
    mutate(case)
    assert_rejected_and_untouched(call_forward, case, error, argument)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("parameter", ["gamma", "beta", "moving_mean", "moving_var"])
def test_forward_16_bit_data_needs_float32_parameters(rng, dtype_name, parameter):
    dtype = resolve_dtype(dtype_name)
    case = forward_case(rng, dtype)
    case[parameter] = case[parameter].astype(dtype)
    assert_rejected_and_untouched(call_forward, case, TypeError, parameter)


@pytest.mark.parametrize("parameter", ["gamma", "beta", "moving_mean", "moving_var"])
def test_forward_float64_data_needs_float64_parameters(rng, parameter):
    case = forward_case(rng, np.float64)
    case[parameter] = case[parameter].astype(np.float32)
    assert_rejected_and_untouched(call_forward, case, TypeError, parameter)


def test_forward_errors_also_hold_in_inference(rng):
    """Checks do not depend on the path: a bad moving_var shape is an error in inference too,
    and a bad eps is an error even when the moving variance is not used."""
    case = forward_case(rng)
    case["flags"].update(training=False)
    case["moving_var"] = np.ones(CHANNELS + 2, np.float32)
    assert_rejected_and_untouched(call_forward, case, ValueError, "moving_var")
    case = forward_case(rng)
    case["flags"].update(use_global_stats=True, eps=-1.0)
    assert_rejected_and_untouched(call_forward, case, ValueError, "eps")


def test_forward_read_only_inputs_are_accepted(rng):
    """Arrays the call only reads may be read-only: data, beta, gamma without fix_gamma, and
    the moving statistics in inference."""
    case = forward_case(rng)
    for name in ("data", "gamma", "beta", "moving_mean", "moving_var"):
        case[name].flags.writeable = False
    case["flags"].update(fix_gamma=False, training=False)
    y, mean, invstd = call_forward(case)
    assert np.all(np.isfinite(y)) and np.shares_memory(y, case["out"])


# --- backward ------------------------------------------------------------------------------

BACKWARD_ERRORS = {
    "dy_float64": (TypeError, "dy", _set(dy=lambda c: c["dy"].astype(np.float64))),
    "dy_int32": (TypeError, "dy", _set(dy=lambda c: c["dy"].astype(np.int32))),
    "dy_not_an_array": (TypeError, "dy", _set(dy=object())),
    "data_float16": (TypeError, "data|dy", _set(data=lambda c: c["data"].astype(np.float16))),
    "gamma_float64": (TypeError, "gamma", _set(gamma=lambda c: c["gamma"].astype(np.float64))),
    "mean_float64": (TypeError, "mean", _set(mean=lambda c: c["mean"].astype(np.float64))),
    "invstd_float16": (TypeError, "invstd",
                       _set(invstd=lambda c: c["invstd"].astype(np.float16))),
    "dx_float64": (TypeError, "dx", _set(dx=poisoned(SHAPE, np.float64))),
    "dgamma_float64": (TypeError, "dgamma", _set(dgamma=poisoned(CHANNELS, np.float64))),
    "dbeta_int32": (TypeError, "dbeta", _set(dbeta=np.zeros(CHANNELS, np.int32))),
    "dy_wrong_shape": (ValueError, "dy", _set(dy=np.zeros((4, 3, 6), np.float32))),
    "gamma_wrong_shape": (ValueError, "gamma", _set(gamma=np.ones(CHANNELS + 1, np.float32))),
    "mean_wrong_shape": (ValueError, "mean", _set(mean=np.ones((1, CHANNELS), np.float32))),
    "invstd_wrong_shape": (ValueError, "invstd", _set(invstd=np.ones(2, np.float32))),
    "dx_wrong_shape": (ValueError, "dx", _set(dx=poisoned((4, 5, 3), np.float32))),
    "dgamma_wrong_shape": (ValueError, "dgamma", _set(dgamma=poisoned(4, np.float32))),
    "dbeta_wrong_shape": (ValueError, "dbeta", _set(dbeta=poisoned((3, 1), np.float32))),
    "dx_non_dense": (ValueError, "dx", _non_dense("dx")),
    "data_0d": (ValueError, "data|dy", _set(data=np.ones((), np.float32),
                                            dy=np.ones((), np.float32), dx=None)),
    "no_items_in_training": (ValueError, "data|dy",
                             _set(data=np.zeros((0, 3, 5), np.float32),
                                  dy=np.zeros((0, 3, 5), np.float32),
                                  dx=poisoned((0, 3, 5), np.float32))),
    "axis_too_large": (ValueError, "axis", _set(axis=3)),
    "axis_too_negative": (ValueError, "axis", _set(axis=-4)),
    "dx_overlaps_data": (ValueError, "dx|data", _overlap("data", "dx", 5)),
    "dx_is_data": (ValueError, "dx|data", _overlap("data", "dx", 0)),
    "dx_overlaps_dy": (ValueError, "dx|dy", _overlap("dy", "dx", 13)),
    "dx_is_dy": (ValueError, "dx|dy", _overlap("dy", "dx", 0)),
    "dgamma_overlaps_dbeta": (ValueError, "dgamma|dbeta", _overlap("dgamma", "dbeta", 1)),
    "dgamma_is_dbeta": (ValueError, "dgamma|dbeta", _overlap("dgamma", "dbeta", 0)),
    "dgamma_is_gamma": (ValueError, "dgamma|gamma", _overlap("gamma", "dgamma", 0)),
    "dbeta_overlaps_mean": (ValueError, "dbeta|mean", _overlap("mean", "dbeta", 2)),
    "dgamma_inside_dx": (ValueError, "dgamma|dx", _overlap("dx", "dgamma", 20)),
    "read_only_dx": ((TypeError, ValueError), "dx", _read_only("dx")),
    "read_only_dbeta": ((TypeError, ValueError), "dbeta", _read_only("dbeta")),
}


@pytest.mark.parametrize("name", list(BACKWARD_ERRORS))
def test_backward_rejects(rng, name):
    error, argument, mutate = BACKWARD_ERRORS[name]
    case = backward_case(rng)
    mutate(case)
    assert_rejected_and_untouched(call_backward, case, error, argument)


@pytest.mark.parametrize("grad_req", ["bogus", "", "WRITE ", ("write", "add"),
                                      ("write", "add", "null", "write"),
                                      ("write", "add", "bogus")])
def test_backward_rejects_bad_grad_req(rng, grad_req):
    case = backward_case(rng)
    case["flags"]["grad_req"] = grad_req
    assert_rejected_and_untouched(call_backward, case, ValueError, "grad_req")


@pytest.mark.parametrize("grad_req", [1, ("write", 2, "null")])
def test_backward_rejects_grad_req_of_wrong_kind(rng, grad_req):
    case = backward_case(rng)
    case["flags"]["grad_req"] = grad_req
    assert_rejected_and_untouched(call_backward, case, (TypeError, ValueError), "grad_req")


@pytest.mark.parametrize("grad_req,missing", [
    ("add", "dx"), ("add", "dgamma"), ("add", "dbeta"),
    (("add", "write", "write"), "dx"), (("null", "add", "null"), "dgamma"),
    (("write", "null", "add"), "dbeta"),
])
def test_backward_add_needs_a_buffer(rng, grad_req, missing):
    case = backward_case(rng)
    case["flags"]["grad_req"] = grad_req
    case[missing] = None
    assert_rejected_and_untouched(call_backward, case, ValueError, missing)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("parameter", ["gamma", "mean", "invstd", "dgamma", "dbeta"])
def test_backward_16_bit_data_needs_float32_parameters(rng, dtype_name, parameter):
    dtype = resolve_dtype(dtype_name)
    case = backward_case(rng, dtype)
    case[parameter] = case[parameter].astype(dtype)
    assert_rejected_and_untouched(call_backward, case, TypeError, parameter)


def test_error_does_not_poison_the_next_call(rng):
    """After a rejected call the same thread's next good call succeeds normally."""
    case = forward_case(rng)
    bad = dict(case, flags=dict(case["flags"], eps=-1.0))
    with pytest.raises(ValueError):
        call_forward(bad)
    case["flags"]["fix_gamma"] = False
    y, mean, invstd = call_forward(case)
    assert np.all(np.isfinite(y))


# --- byte order ----------------------------------------------------------------------------

def _byte_swapped(array):
    """The same values stored in the non-native byte order (e.g. '>f4' on x86)."""
    return array.astype(array.dtype.newbyteorder())


@pytest.mark.parametrize("name", ["data", "gamma", "beta", "moving_mean", "moving_var", "out"])
def test_forward_non_native_byte_order_is_rejected_or_read_correctly(rng, name):
    """A '>f4' array on a little-endian machine has a supported kind but not the native
    layout of its bytes: pybn must either reject it (TypeError naming it, nothing written)
    or read and write it by value -- never reinterpret its bytes."""
    from reference import assert_close, forward_reference

    case = forward_case(rng)
    case["flags"]["fix_gamma"] = False
    expected = forward_reference(case["data"], case["gamma"], case["beta"], case["moving_mean"],
                                 case["moving_var"], fix_gamma=False)
    case[name] = _byte_swapped(case[name])
    before = [(label, array.copy()) for label, array in arrays_of(case)]
    try:
        y, mean, invstd = call_forward(case)
    except TypeError as error:
        assert name in str(error)
        for (label, after), (_, copy) in zip(arrays_of(case), before):
            assert after.tobytes() == copy.tobytes(), f"{label} changed on error"
        return
    assert_close(case["out"], expected["y"], what="out")
    assert_close(y, expected["y"], what="y")
    assert_close(mean, expected["mean"], what="mean")
    assert_close(case["moving_mean"], expected["moving_mean"], what="moving_mean")
    assert_close(case["moving_var"], expected["moving_var"], what="moving_var")


@pytest.mark.parametrize("name", ["dy", "data", "gamma", "mean", "invstd", "dx", "dgamma"])
def test_backward_non_native_byte_order_is_rejected_or_read_correctly(rng, name):
    from reference import assert_gradients_close

    case = backward_case(rng)
    inputs = {key: case[key].copy() for key in ("dy", "data", "gamma", "mean", "invstd")}
    case[name] = _byte_swapped(case[name])
    before = [(label, array.copy()) for label, array in arrays_of(case)]
    try:
        call_backward(case)
    except TypeError as error:
        assert name in str(error)
        for (label, after), (_, copy) in zip(arrays_of(case), before):
            assert after.tobytes() == copy.tobytes(), f"{label} changed on error"
        return
    assert_gradients_close((case["dx"], case["dgamma"], case["dbeta"]), **inputs,
                           fix_gamma=False)
