"""pybn.batch_norm_backward against the float64 model (tests/reference.py) of SPEC.md
"Backward", including the write / add / null gradient requests."""

import itertools

import numpy as np
import pytest

import pybn
from conftest import DTYPE_NAMES, poisoned, resolve_dtype
from reference import assert_gradients_close, param_dtype

GRAD_REQS = ("write", "add", "null")


def forward_statistics(inputs, **flags):
    """The mean and invstd pybn's forward returns for these inputs and flags (the values the
    backward is documented to take), computed on copies."""
    state = {name: array.copy() for name, array in inputs.items()}
    _, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"],
                                      output_mean_var=True, **flags)
    return mean, invstd


def random_dy(rng, data):
    return rng.standard_normal(data.shape).astype(data.dtype)


@pytest.mark.parametrize("given_buffers", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("use_global_stats", [False, True])
@pytest.mark.parametrize("fix_gamma", [True, False])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_flag_matrix(rng, make_inputs, dtype_name, fix_gamma, use_global_stats, training,
                     given_buffers):
    dtype = resolve_dtype(dtype_name)
    pdtype = param_dtype(dtype)
    inputs = make_inputs((4, 3, 5, 6), dtype=dtype)
    flags = dict(fix_gamma=fix_gamma, use_global_stats=use_global_stats, training=training)
    mean, invstd = forward_statistics(inputs, **flags)
    data = inputs["data"]
    gamma = inputs["gamma"]  # random, not ones: with fix_gamma the backward must use 1
    dy = random_dy(rng, data)
    data_before, gamma_before, dy_before = data.copy(), gamma.copy(), dy.copy()
    mean_before, invstd_before = mean.copy(), invstd.copy()

    buffers = {}
    if given_buffers:
        buffers = dict(dx=poisoned(data.shape, dtype), dgamma=poisoned(3, pdtype),
                       dbeta=poisoned(3, pdtype))
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, data, gamma, mean, invstd, **flags,
                                                 **buffers)
    assert dx.shape == data.shape and dx.dtype == dtype
    assert dgamma.shape == (3,) and dgamma.dtype == pdtype
    assert dbeta.shape == (3,) and dbeta.dtype == pdtype
    if given_buffers:
        assert np.shares_memory(dx, buffers["dx"])
        assert np.shares_memory(dgamma, buffers["dgamma"])
        assert np.shares_memory(dbeta, buffers["dbeta"])

    assert_gradients_close((dx, dgamma, dbeta), dy, data, gamma, mean, invstd, **flags)
    if fix_gamma:
        np.testing.assert_array_equal(dgamma, np.zeros(3, dtype=pdtype))
    # The backward only reads its inputs.
    for after, before in [(data, data_before), (gamma, gamma_before), (dy, dy_before),
                          (mean, mean_before), (invstd, invstd_before)]:
        np.testing.assert_array_equal(after, before)


def test_defaults_are_mxnets(rng, make_inputs):
    """fix_gamma=True, use_global_stats=False, training=True, axis=1, grad_req='write'."""
    inputs = make_inputs((5, 4, 6), dtype=np.float64)
    mean, invstd = forward_statistics(inputs)
    dy = random_dy(rng, inputs["data"])
    result = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd)
    assert isinstance(result, tuple) and len(result) == 3
    assert_gradients_close(result, dy, inputs["data"], inputs["gamma"], mean, invstd,
                           fix_gamma=True, use_global_stats=False, training=True, axis=1)


SHAPES_BY_NDIM = {1: (6,), 2: (7, 4), 3: (3, 4, 5), 4: (2, 3, 4, 5), 5: (2, 3, 2, 5, 4)}
NDIM_AXIS = [(ndim, axis) for ndim in SHAPES_BY_NDIM for axis in range(-ndim, ndim)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("ndim,axis", NDIM_AXIS)
def test_every_ndim_and_axis(rng, make_inputs, ndim, axis, dtype_name, training):
    inputs = make_inputs(SHAPES_BY_NDIM[ndim], axis=axis, dtype=resolve_dtype(dtype_name))
    flags = dict(fix_gamma=False, training=training, axis=axis)
    mean, invstd = forward_statistics(inputs, **flags)
    dy = random_dy(rng, inputs["data"])
    channels = inputs["data"].shape[axis]
    pdtype = inputs["gamma"].dtype
    dx_out = poisoned(inputs["data"].shape, inputs["data"].dtype)
    result = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd,
                                      dx=dx_out, dgamma=poisoned(channels, pdtype),
                                      dbeta=poisoned(channels, pdtype), **flags)
    assert_gradients_close(result, dy, inputs["data"], inputs["gamma"], mean, invstd, **flags)


def _grad_req_id(grad_req):
    return grad_req if isinstance(grad_req, str) else "-".join(grad_req)


ALL_GRAD_REQS = list(GRAD_REQS) + list(itertools.product(GRAD_REQS, repeat=3))


@pytest.mark.parametrize("buffers_for", ["all", "add_only"])
@pytest.mark.parametrize("grad_req", ALL_GRAD_REQS, ids=_grad_req_id)
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
def test_grad_req(rng, make_inputs, dtype_name, grad_req, buffers_for):
    """write overwrites, add accumulates into the given buffer, null leaves it alone and
    returns None. `buffers_for='add_only'` passes buffers only where "add" needs one."""
    dtype = resolve_dtype(dtype_name)
    pdtype = param_dtype(dtype)
    inputs = make_inputs((6, 4, 5), dtype=dtype)
    flags = dict(fix_gamma=False, training=True)
    mean, invstd = forward_statistics(inputs, **flags)
    data = inputs["data"]
    dy = random_dy(rng, data)
    requests = (grad_req,) * 3 if isinstance(grad_req, str) else grad_req
    names = ("dx", "dgamma", "dbeta")
    shapes = (data.shape, (4,), (4,))
    dtypes = (dtype, pdtype, pdtype)

    buffers, initial = {}, {}
    for name, request, shape, buffer_dtype in zip(names, requests, shapes, dtypes):
        if request == "write":
            if buffers_for == "all":
                buffers[name] = poisoned(shape, buffer_dtype)
        else:  # "add" starts from values to accumulate onto; "null" must not touch them
            if request == "add" or buffers_for == "all":
                buffers[name] = rng.standard_normal(shape).astype(buffer_dtype)
                initial[name] = buffers[name].copy()

    result = pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, **flags,
                                      grad_req=grad_req, **buffers)
    assert isinstance(result, tuple) and len(result) == 3
    for name, request, returned in zip(names, requests, result):
        if request == "null":
            assert returned is None, f"{name}: 'null' must return None"
            if name in buffers:
                np.testing.assert_array_equal(buffers[name], initial[name])
            continue
        if name in buffers:
            assert np.shares_memory(returned, buffers[name]), f"{name}: not the given buffer"
    # "write" results equal the gradient; "add" results the initial contents plus it.
    starts = tuple(initial.get(name) if request == "add" else None
                   for name, request in zip(names, requests))
    assert_gradients_close(result, dy, data, inputs["gamma"], mean, invstd, **flags,
                           initial=starts)


@pytest.mark.parametrize("flags", [dict(use_global_stats=True), dict(training=False)],
                         ids=["use_global_stats", "inference"])
@pytest.mark.parametrize("shape", [(6, 4, 5), (2, 3, 600), (3, 8, 7, 7), (40, 300), (4, 2100)])
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
def test_add_with_global_statistics(rng, make_inputs, dtype_name, shape, flags):
    """dx = dy * invstd * g added onto dx (and dgamma, dbeta onto theirs) with the moving
    statistics: each kernel family's elementwise pass (long runs, 7x7 channel runs, 2-D rows,
    one block and several) in its global-statistics, accumulating form."""
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, dtype=dtype)
    flags = dict(fix_gamma=False, **flags)
    mean, invstd = forward_statistics(inputs, **flags)
    data = inputs["data"]
    dy = random_dy(rng, data)
    channels = shape[1]
    buffers = {"dx": rng.standard_normal(shape).astype(dtype),
               "dgamma": rng.standard_normal(channels).astype(param_dtype(dtype)),
               "dbeta": rng.standard_normal(channels).astype(param_dtype(dtype))}
    initial = tuple(buffers[name].copy() for name in ("dx", "dgamma", "dbeta"))
    result = pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, **flags,
                                      grad_req="add", **buffers)
    assert_gradients_close(result, dy, data, inputs["gamma"], mean, invstd, **flags, initial=initial)


def test_add_accumulates_over_calls(rng, make_inputs):
    """Three "add" calls on the same buffers give three times the gradient."""
    inputs = make_inputs((8, 3, 4), dtype=np.float64)
    flags = dict(fix_gamma=False)
    mean, invstd = forward_statistics(inputs, **flags)
    dy = random_dy(rng, inputs["data"])
    dx = np.zeros_like(inputs["data"])
    dgamma = np.zeros(3)
    dbeta = np.zeros(3)
    for _ in range(3):
        pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd, **flags,
                                 grad_req="add", dx=dx, dgamma=dgamma, dbeta=dbeta)
    # Three "add" calls onto zeros equal one call's gradient of 3 * dy.
    assert_gradients_close((dx, dgamma, dbeta), 3 * dy, inputs["data"], inputs["gamma"], mean,
                           invstd, **flags)


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_fix_gamma_add_leaves_dgamma_unchanged(rng, make_inputs, dtype_name):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs((4, 3, 2), dtype=dtype)
    mean, invstd = forward_statistics(inputs, fix_gamma=True)
    dgamma = rng.standard_normal(3).astype(param_dtype(dtype))
    before = dgamma.copy()
    _, returned, _ = pybn.batch_norm_backward(random_dy(rng, inputs["data"]), inputs["data"],
                                              inputs["gamma"], mean, invstd, fix_gamma=True,
                                              grad_req=("write", "add", "write"), dgamma=dgamma)
    np.testing.assert_array_equal(dgamma, before)
    assert np.shares_memory(returned, dgamma)


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("shape,axis", [((1, 5), 1), ((5,), 0), ((1, 3, 1, 1), 1)])
def test_one_item_per_channel(rng, make_inputs, dtype_name, shape, axis):
    """M == 1 in training: x - mean = 0, so dx = 0."""
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=axis, dtype=dtype)
    flags = dict(fix_gamma=False, axis=axis)
    mean, invstd = forward_statistics(inputs, **flags)
    dy = random_dy(rng, inputs["data"])
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean,
                                                 invstd, **flags)
    assert_gradients_close((dx, dgamma, dbeta), dy, inputs["data"], inputs["gamma"], mean,
                           invstd, **flags)


def test_zero_invstd_gives_zero_dx(rng, make_inputs):
    """A constant channel with eps = 0 has invstd = 0: its dx is 0, not NaN."""
    inputs = make_inputs((6, 3, 5), dtype=np.float64)
    inputs["data"][:, 0, :] = -1.25
    flags = dict(fix_gamma=False, eps=0.0)
    mean, invstd = forward_statistics(inputs, **flags)
    assert invstd[0] == 0
    dy = random_dy(rng, inputs["data"])
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean,
                                                 invstd, fix_gamma=False)
    np.testing.assert_array_equal(dx[:, 0, :], np.zeros((6, 5)))
    assert_gradients_close((dx, dgamma, dbeta), dy, inputs["data"], inputs["gamma"], mean,
                           invstd, fix_gamma=False)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,axis", [((4, 0, 5), 1), ((3, 0), -1)])
def test_no_channels_is_a_no_op(shape, axis, training):
    data = np.ones(shape, dtype=np.float64)
    empty = np.zeros(0)
    dx, dgamma, dbeta = pybn.batch_norm_backward(np.ones(shape), data, empty, empty, empty,
                                                 axis=axis, training=training)
    assert dx.shape == shape and dgamma.shape == (0,) and dbeta.shape == (0,)


# (0, 3): strips or the row layout; (0, 3, 100) and (0, 3, 600): long runs (uses_long_runs).
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 100), (0, 3, 600)])
def test_no_items_per_channel_in_inference(make_inputs, shape):
    """M == 0 with global statistics: empty dx, zero dgamma and dbeta (empty sums)."""
    inputs = make_inputs(shape, dtype=np.float32)
    mean, invstd = forward_statistics(inputs, training=False, fix_gamma=False)
    dy = np.zeros(shape, dtype=np.float32)
    result = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd,
                                      training=False, fix_gamma=False,
                                      dgamma=poisoned(3, np.float32),
                                      dbeta=poisoned(3, np.float32))
    assert_gradients_close(result, dy, inputs["data"], inputs["gamma"], mean, invstd,
                           training=False, fix_gamma=False)


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_nan_in_dy_stays_in_its_channel(rng, make_inputs, dtype_name, axis):
    dtype = resolve_dtype(dtype_name)
    shape = (4, 5, 6)
    inputs = make_inputs(shape, axis=axis, dtype=dtype)
    flags = dict(fix_gamma=False, axis=axis)
    mean, invstd = forward_statistics(inputs, **flags)
    dy = random_dy(rng, inputs["data"])
    bad_dy = dy.copy()
    index = [2, 3, 4]
    index[axis % 3] = 1
    bad_dy[tuple(index)] = np.nan
    good = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd, **flags)
    bad = pybn.batch_norm_backward(bad_dy, inputs["data"], inputs["gamma"], mean, invstd,
                                   **flags)
    others = [c for c in range(shape[axis % 3]) if c != 1]
    np.testing.assert_array_equal(np.take(bad[0], others, axis=axis),
                                  np.take(good[0], others, axis=axis))
    np.testing.assert_array_equal(bad[1][others], good[1][others])
    np.testing.assert_array_equal(bad[2][others], good[2][others])
    assert np.isnan(bad[2][1]) and np.isnan(bad[1][1])
    assert np.all(np.isnan(np.take(bad[0], 1, axis=axis).astype(np.float64)))
    assert_gradients_close(bad, bad_dy, inputs["data"], inputs["gamma"], mean, invstd, **flags)


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_bit_identical_between_runs(rng, make_inputs, dtype_name, axis):
    inputs = make_inputs((16, 8, 33, 17), axis=axis, dtype=resolve_dtype(dtype_name))
    flags = dict(fix_gamma=False, axis=axis)
    mean, invstd = forward_statistics(inputs, **flags)
    dy = random_dy(rng, inputs["data"])
    first = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd, **flags)
    second = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd,
                                      **flags)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


def test_forward_then_backward_matches_reference_end_to_end(rng, make_inputs):
    """One training step (forward + backward) held to the model from the raw inputs alone:
    the statistics the backward gets are pybn's, but must equal the model's."""
    from reference import assert_close, forward_reference

    inputs = make_inputs((10, 4, 3, 3), dtype=np.float32)
    state = {name: array.copy() for name, array in inputs.items()}
    y, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"],
                                      fix_gamma=False, output_mean_var=True)
    dy = random_dy(rng, inputs["data"])
    grads = pybn.batch_norm_backward(dy, state["data"], state["gamma"], mean, invstd,
                                     fix_gamma=False)
    forward = forward_reference(**inputs, fix_gamma=False)
    assert_close(y, forward["y"])
    assert_gradients_close(grads, dy, inputs["data"], inputs["gamma"], forward["mean"],
                           forward["invstd"], fix_gamma=False)
