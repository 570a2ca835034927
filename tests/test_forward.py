"""pybn.batch_norm against the float64 model (tests/reference.py) of SPEC.md "Forward"."""

import decimal

import numpy as np
import pytest

import pybn
from conftest import DTYPE_NAMES, assert_bitwise_equal, poisoned, resolve_dtype
from reference import assert_close, forward_reference, param_dtype


def run_forward(inputs, **flags):
    """pybn.batch_norm on copies of `inputs` (so the caller keeps the originals), with a
    NaN-poisoned `out`. Returns (y, mean, invstd, state) where state holds the buffers after
    the call; mean and invstd are None unless output_mean_var."""
    state = {name: array.copy() for name, array in inputs.items()}
    out = poisoned(state["data"].shape, state["data"].dtype)
    result = pybn.batch_norm(state["data"], state["gamma"], state["beta"], state["moving_mean"],
                             state["moving_var"], out=out, **flags)
    if flags.get("output_mean_var", False):
        y, mean, invstd = result
    else:
        y, mean, invstd = result, None, None
    assert y.size == 0 or np.shares_memory(y, out), "the result must be written into out="
    return y, mean, invstd, state


def check_forward(inputs, expected, y, mean, invstd, state):
    data = inputs["data"]
    pdtype = param_dtype(data.dtype)
    assert y.shape == data.shape and y.dtype == data.dtype
    assert_close(y, expected["y"], what="y")
    if mean is not None:
        assert mean.shape == expected["mean"].shape
        assert mean.dtype == pdtype and invstd.dtype == pdtype
        assert_close(mean, expected["mean"], what="mean")
        assert_close(invstd, expected["invstd"], what="invstd")
    assert_close(state["moving_mean"], expected["moving_mean"], what="moving_mean")
    assert_close(state["moving_var"], expected["moving_var"], what="moving_var")
    assert_close(state["gamma"], expected["gamma"], what="gamma")
    # Inputs the forward only reads stay as they were, bit for bit.
    assert_bitwise_equal(state["data"], data, what="data")
    assert_bitwise_equal(state["beta"], inputs["beta"], what="beta")


@pytest.mark.parametrize("output_mean_var", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("use_global_stats", [False, True])
@pytest.mark.parametrize("fix_gamma", [True, False])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_flag_matrix(make_inputs, dtype_name, fix_gamma, use_global_stats, training,
                     output_mean_var):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs((4, 3, 5, 6), axis=1, dtype=dtype)
    flags = dict(eps=1e-3, momentum=0.9, fix_gamma=fix_gamma, use_global_stats=use_global_stats,
                 training=training, output_mean_var=output_mean_var)
    y, mean, invstd, state = run_forward(inputs, **flags)
    expected = forward_reference(**inputs, eps=1e-3, momentum=0.9, fix_gamma=fix_gamma,
                                 use_global_stats=use_global_stats, training=training, axis=1)
    check_forward(inputs, expected, y, mean, invstd, state)

    uses_batch_stats = training and not use_global_stats
    if not uses_batch_stats:
        # Moving statistics are untouched, bit for bit.
        np.testing.assert_array_equal(state["moving_mean"], inputs["moving_mean"])
        np.testing.assert_array_equal(state["moving_var"], inputs["moving_var"])
    if not fix_gamma:
        np.testing.assert_array_equal(state["gamma"], inputs["gamma"])


def test_defaults_are_mxnets(make_inputs):
    """eps=1e-3, momentum=0.9, fix_gamma=True, use_global_stats=False, axis=1, training=True,
    output_mean_var=False: a call with no flags returns y alone, computed with those."""
    inputs = make_inputs((6, 4, 7), dtype=np.float64)
    state = {name: array.copy() for name, array in inputs.items()}
    y = pybn.batch_norm(state["data"], state["gamma"], state["beta"], state["moving_mean"],
                        state["moving_var"])
    assert isinstance(y, np.ndarray) and y.shape == (6, 4, 7) and y.dtype == np.float64
    assert not np.shares_memory(y, state["data"])
    expected = forward_reference(**inputs, eps=1e-3, momentum=0.9, fix_gamma=True,
                                 use_global_stats=False, training=True, axis=1)
    assert_close(y, expected["y"])
    assert_close(state["moving_mean"], expected["moving_mean"])
    assert_close(state["moving_var"], expected["moving_var"])
    np.testing.assert_array_equal(state["gamma"], np.ones(4))


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_allocates_outputs_without_out(make_inputs, dtype_name):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs((3, 5, 8), dtype=dtype)
    state = {name: array.copy() for name, array in inputs.items()}
    y, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"],
                                      fix_gamma=False, output_mean_var=True)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == (3, 5, 8)
    assert mean.shape == (5,) and invstd.shape == (5,)
    expected = forward_reference(**inputs, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)


# Shapes with all-different sizes, so a wrong axis cannot give the right answer by chance.
SHAPES_BY_NDIM = {1: (6,), 2: (7, 4), 3: (3, 4, 5), 4: (2, 3, 4, 5), 5: (2, 3, 2, 5, 4)}
NDIM_AXIS = [(ndim, axis) for ndim in SHAPES_BY_NDIM for axis in range(-ndim, ndim)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("ndim,axis", NDIM_AXIS)
def test_every_ndim_and_axis(make_inputs, ndim, axis, dtype_name, training):
    shape = SHAPES_BY_NDIM[ndim]
    inputs = make_inputs(shape, axis=axis, dtype=resolve_dtype(dtype_name))
    y, mean, invstd, state = run_forward(inputs, axis=axis, fix_gamma=False, training=training,
                                         output_mean_var=True)
    assert mean.shape == (shape[axis],)
    expected = forward_reference(**inputs, fix_gamma=False, training=training, axis=axis)
    check_forward(inputs, expected, y, mean, invstd, state)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_moving_statistics_update(make_inputs, dtype_name, momentum):
    inputs = make_inputs((8, 3, 10), dtype=resolve_dtype(dtype_name))
    y, mean, invstd, state = run_forward(inputs, momentum=momentum, output_mean_var=True)
    expected = forward_reference(**inputs, momentum=momentum)
    check_forward(inputs, expected, y, mean, invstd, state)
    if momentum == 1.0:
        np.testing.assert_array_equal(state["moving_mean"], inputs["moving_mean"])
        np.testing.assert_array_equal(state["moving_var"], inputs["moving_var"])
    if momentum == 0.0:
        # The batch statistics themselves; the variance is the biased one.
        x = inputs["data"].astype(np.float64).transpose(1, 0, 2).reshape(3, -1)
        assert_close(state["moving_mean"], x.mean(axis=1))
        assert_close(state["moving_var"], x.var(axis=1, ddof=0))


def test_moving_statistics_after_several_steps(make_inputs):
    """Repeated training calls compound the update on the same buffers."""
    inputs = make_inputs((16, 4), dtype=np.float64)
    moving_mean = inputs["moving_mean"].copy()
    moving_var = inputs["moving_var"].copy()
    expected_mean, expected_var = moving_mean.copy(), moving_var.copy()
    rng = np.random.default_rng(7)
    for _ in range(5):
        data = rng.normal(2.0, 3.0, (16, 4))
        pybn.batch_norm(data, inputs["gamma"].copy(), inputs["beta"], moving_mean, moving_var,
                        momentum=0.8)
        step = forward_reference(data, inputs["gamma"], inputs["beta"], expected_mean,
                                 expected_var, momentum=0.8)
        expected_mean, expected_var = step["moving_mean"], step["moving_var"]
    assert_close(moving_mean, expected_mean)
    assert_close(moving_var, expected_var)


@pytest.mark.parametrize("training,use_global_stats", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_fix_gamma_writes_ones_into_gamma(make_inputs, dtype_name, training, use_global_stats):
    inputs = make_inputs((5, 4, 3), dtype=resolve_dtype(dtype_name))
    gamma = inputs["gamma"].copy()
    assert not np.any(gamma == 1)
    pybn.batch_norm(inputs["data"], gamma, inputs["beta"], inputs["moving_mean"].copy(),
                    inputs["moving_var"].copy(), fix_gamma=True, training=training,
                    use_global_stats=use_global_stats)
    np.testing.assert_array_equal(gamma, np.ones(4, dtype=gamma.dtype))


def test_fix_gamma_writes_ones_into_strided_gamma(make_inputs):
    inputs = make_inputs((5, 4, 3), dtype=np.float32)
    storage = np.full(8, 7.0, dtype=np.float32)
    gamma = storage[::2]
    y = pybn.batch_norm(inputs["data"], gamma, inputs["beta"], inputs["moving_mean"].copy(),
                        inputs["moving_var"].copy(), fix_gamma=True)
    np.testing.assert_array_equal(storage[::2], np.ones(4, dtype=np.float32))
    np.testing.assert_array_equal(storage[1::2], np.full(4, 7.0, dtype=np.float32))
    assert_close(y, forward_reference(**inputs)["y"])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_in_place(make_inputs, dtype_name, training):
    """out=data: y overwrites data and is computed from the original values."""
    inputs = make_inputs((4, 6, 9), dtype=resolve_dtype(dtype_name))
    state = {name: array.copy() for name, array in inputs.items()}
    y, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"],
                                      fix_gamma=False, training=training, output_mean_var=True,
                                      out=state["data"])
    assert np.shares_memory(y, state["data"])
    expected = forward_reference(**inputs, fix_gamma=False, training=training)
    assert_close(state["data"], expected["y"], what="data after in-place call")
    assert_close(mean, expected["mean"])
    assert_close(invstd, expected["invstd"])
    assert_close(state["moving_mean"], expected["moving_mean"])
    assert_close(state["moving_var"], expected["moving_var"])


@pytest.mark.parametrize("eps", [0.0, 1e-5, 1e-3, 0.5])
def test_eps_values(make_inputs, eps):
    inputs = make_inputs((6, 3, 4), dtype=np.float64)
    for training in (True, False):
        y, mean, invstd, state = run_forward(inputs, eps=eps, training=training,
                                             output_mean_var=True, fix_gamma=False)
        expected = forward_reference(**inputs, eps=eps, training=training, fix_gamma=False)
        check_forward(inputs, expected, y, mean, invstd, state)


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("shape,axis", [((1, 5), 1), ((5,), 0), ((1, 3, 1, 1), 1), ((4, 1), 0)])
def test_one_item_per_channel(make_inputs, dtype_name, shape, axis):
    """M == 1 in training: var = 0, invstd = 1/sqrt(eps), y = beta."""
    inputs = make_inputs(shape, axis=axis, dtype=resolve_dtype(dtype_name))
    eps = 1e-3
    y, mean, invstd, state = run_forward(inputs, axis=axis, eps=eps, fix_gamma=False,
                                         output_mean_var=True)
    expected = forward_reference(**inputs, axis=axis, eps=eps, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)
    channels = shape[axis]
    assert_close(invstd, np.full(channels, 1 / np.sqrt(eps)))
    y_channels_last = np.moveaxis(y, axis, -1)
    assert_close(y_channels_last, np.broadcast_to(inputs["beta"].astype(np.float64),
                                                  y_channels_last.shape), dtype=y.dtype)
    assert_close(state["moving_var"], inputs["moving_var"].astype(np.float64) * 0.9)


def test_one_item_per_channel_with_zero_eps(make_inputs):
    """var + eps == 0: invstd is 0 (not inf) and y = beta (not NaN)."""
    inputs = make_inputs((1, 4), dtype=np.float32)
    y, mean, invstd, state = run_forward(inputs, eps=0.0, fix_gamma=False,
                                         output_mean_var=True)
    np.testing.assert_array_equal(invstd, np.zeros(4, dtype=np.float32))
    np.testing.assert_array_equal(y, inputs["beta"].reshape(1, 4))
    expected = forward_reference(**inputs, eps=0.0, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)


def test_constant_channel_with_zero_eps(make_inputs):
    """A constant channel with eps = 0 has var + eps == 0 too; other channels are normal."""
    inputs = make_inputs((6, 3, 5), dtype=np.float64)
    inputs["data"][:, 1, :] = 2.5
    y, mean, invstd, state = run_forward(inputs, eps=0.0, fix_gamma=False,
                                         output_mean_var=True)
    assert invstd[1] == 0.0
    np.testing.assert_array_equal(y[:, 1, :], np.full((6, 5), inputs["beta"][1]))
    expected = forward_reference(**inputs, eps=0.0, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)


def test_zero_moving_var_with_zero_eps_in_inference(make_inputs):
    inputs = make_inputs((3, 4, 2), dtype=np.float32)
    inputs["moving_var"][2] = 0.0
    y, mean, invstd, state = run_forward(inputs, eps=0.0, training=False, fix_gamma=False,
                                         output_mean_var=True)
    assert invstd[2] == 0.0
    assert np.all(np.isfinite(y))
    expected = forward_reference(**inputs, eps=0.0, training=False, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)


def exact_inverse_sqrt(values):
    """1 / sqrt(v) of each float64 v > 0, correctly rounded to float64 (40 decimal digits
    through the decimal module: independent of numpy's and the platform's square root)."""
    with decimal.localcontext() as context:
        context.prec = 40
        return np.array([float(1 / decimal.Decimal(float(v)).sqrt()) for v in values])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_invstd_of_any_magnitude_within_one_ulp(rng, dtype):
    """invstd = 1 / sqrt(moving_var + eps) in inference, for variances spread over the whole
    range of the parameter dtype (subnormals and the largest finite value included), within
    one ulp of the correctly rounded value; 0 or +inf give 0, negatives and NaN give NaN.
    2500 channels: the vector loops over channel batches and their tails."""
    info = np.finfo(dtype)
    low, high = np.log10(float(info.smallest_subnormal)), np.log10(float(info.max))
    moving_var = (10.0 ** rng.uniform(low, high, 2500)).astype(dtype)
    specials = [0.0, -0.0, np.inf, np.nan, -1.0, -np.inf, float(info.smallest_subnormal),
                float(info.smallest_normal), float(info.max), 1.0, 4.0]
    moving_var[:len(specials)] = specials
    channels = moving_var.size
    data = rng.standard_normal((2, channels)).astype(dtype)
    ones, zeros = np.ones(channels, dtype), np.zeros(channels, dtype)
    out = poisoned(data.shape, dtype)
    _, _, invstd = pybn.batch_norm(data, ones, zeros, zeros.copy(), moving_var, eps=0.0, training=False,
                                   fix_gamma=False, output_mean_var=True, out=out)
    assert invstd.dtype == dtype
    d = moving_var.astype(np.float64)
    positive = np.isfinite(d) & (d > 0)
    assert np.all(invstd[(d == 0) | (d == np.inf)] == 0)
    assert np.all(np.isnan(invstd[np.isnan(d) | (d < 0)]))
    expected = exact_inverse_sqrt(d[positive])
    if dtype == np.float32:  # from the float64 value, rounded once more to float32
        expected = expected.astype(np.float32).astype(np.float64)
    got = invstd[positive].astype(np.float64)
    ulps = np.abs(got - expected) / np.spacing(expected.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 1, f"worst: {ulps.max()} ulps at moving_var {d[positive][ulps.argmax()]!r}"


@pytest.mark.parametrize("training", [True, False])
def test_no_items_per_channel_in_inference_or_error_in_training(make_inputs, training):
    """M == 0: an error in training (checked in test_errors), an empty y in inference."""
    inputs = make_inputs((0, 3, 4), dtype=np.float32)
    if training:
        with pytest.raises(ValueError):
            pybn.batch_norm(**inputs)
        return
    y, mean, invstd, state = run_forward(inputs, training=False, fix_gamma=False,
                                         output_mean_var=True)
    assert y.shape == (0, 3, 4)
    expected = forward_reference(**inputs, training=False, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,axis", [((4, 0, 5), 1), ((0,), 0), ((3, 0), -1)])
def test_no_channels_is_a_no_op(shape, axis, training):
    data = np.ones(shape, dtype=np.float32)
    empty = np.zeros(0, dtype=np.float32)
    gamma, beta, moving_mean, moving_var = (empty.copy() for _ in range(4))
    y, mean, invstd = pybn.batch_norm(data, gamma, beta, moving_mean, moving_var, axis=axis,
                                      training=training, output_mean_var=True)
    assert y.shape == shape and y.dtype == np.float32
    assert mean.shape == (0,) and invstd.shape == (0,)
    np.testing.assert_array_equal(data, np.ones(shape, dtype=np.float32))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_non_finite_value_stays_in_its_channel(make_inputs, dtype_name, axis, bad_value):
    """A NaN/Inf poisons its own channel's outputs only: the other channels match the model
    and are bit-identical to a run where that channel holds finite values."""
    dtype = resolve_dtype(dtype_name)
    shape = (4, 5, 6)
    inputs = make_inputs(shape, axis=axis, dtype=dtype)
    bad_channel = 2
    bad = {name: array.copy() for name, array in inputs.items()}
    index = [1, 1, 1]
    index[axis % 3] = bad_channel
    bad["data"][tuple(index)] = bad_value

    flags = dict(axis=axis, fix_gamma=False, output_mean_var=True)
    y_bad, mean_bad, invstd_bad, state_bad = run_forward(bad, **flags)
    y_good, mean_good, invstd_good, state_good = run_forward(inputs, **flags)
    expected = forward_reference(**bad, axis=axis, fix_gamma=False)

    others = [c for c in range(shape[axis % 3]) if c != bad_channel]
    assert_bitwise_equal(np.take(y_bad, others, axis=axis), np.take(y_good, others, axis=axis),
                         what="y of the other channels")
    assert_close(np.take(y_bad, others, axis=axis), np.take(expected["y"], others, axis=axis))
    for name, bad_stat, good_stat in [
            ("mean", mean_bad, mean_good), ("invstd", invstd_bad, invstd_good),
            ("moving_mean", state_bad["moving_mean"], state_good["moving_mean"]),
            ("moving_var", state_bad["moving_var"], state_good["moving_var"])]:
        assert_bitwise_equal(bad_stat[others], good_stat[others], what=name)
        assert_close(bad_stat[others], expected[name][others], what=name)
    # The bad channel: var is NaN (x - mean is NaN or inf - inf), hence invstd, the moving
    # variance and every y of the channel; the mean is NaN or infinite.
    assert np.isnan(invstd_bad[bad_channel])
    assert np.isnan(state_bad["moving_var"][bad_channel])
    assert not np.isfinite(mean_bad[bad_channel])
    assert not np.isfinite(state_bad["moving_mean"][bad_channel])
    assert np.all(np.isnan(np.take(y_bad, bad_channel, axis=axis).astype(np.float64)))
    assert_bitwise_equal(state_bad["data"], bad["data"], what="data")


@pytest.mark.parametrize("bad_value", [np.inf, -np.inf])
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
def test_infinite_value_gives_infinite_mean(make_inputs, dtype_name, bad_value):
    """SPEC.md: mean = (1/M) * sum(x), which is +-inf when one x is +-inf (as MXNet computes
    it); the variance, and so invstd and y, are NaN."""
    inputs = make_inputs((4, 3, 5), dtype=resolve_dtype(dtype_name))
    inputs["data"][2, 1, 3] = bad_value
    y, mean, invstd, state = run_forward(inputs, fix_gamma=False, output_mean_var=True)
    expected = forward_reference(**inputs, fix_gamma=False)
    assert expected["mean"][1] == bad_value
    assert mean[1] == bad_value, f"mean of the channel holding {bad_value} is {mean[1]}"
    assert state["moving_mean"][1] == bad_value
    check_forward(inputs, expected, y, mean, invstd, state)


@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_non_finite_value_in_inference(make_inputs, dtype_name):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs((3, 4, 5), dtype=dtype)
    inputs["data"][0, 3, 0] = np.nan
    inputs["data"][2, 1, 4] = np.inf
    y, mean, invstd, state = run_forward(inputs, training=False, fix_gamma=False,
                                         output_mean_var=True)
    expected = forward_reference(**inputs, training=False, fix_gamma=False)
    check_forward(inputs, expected, y, mean, invstd, state)


@pytest.mark.slow
@pytest.mark.parametrize("axis", [1, -1])
def test_large_mean_accuracy(axis):
    """float32 data with |mean| = 1e4 * std over ~2 million items per channel: the statistics
    must not lose the variance to cancellation, nor y to a folded shift."""
    rng = np.random.default_rng(1234 + axis)
    std = np.array([1.0, 0.7, 1.3])
    mean = np.array([1e4, -1e4, 1e4]) * std
    if axis == 1:
        shape, broadcast = (8, 3, 512, 512), (1, 3, 1, 1)
    else:
        shape, broadcast = (8, 512, 512, 3), (1, 1, 1, 3)
    data = (mean.reshape(broadcast)
            + std.reshape(broadcast) * rng.standard_normal(shape, dtype=np.float32)
            ).astype(np.float32)
    gamma = np.ones(3, dtype=np.float32)
    beta = np.zeros(3, dtype=np.float32)
    moving_mean = np.zeros(3, dtype=np.float32)
    moving_var = np.ones(3, dtype=np.float32)
    out = np.full(shape, np.nan, dtype=np.float32)
    y, batch_mean, invstd = pybn.batch_norm(data, gamma, beta, moving_mean, moving_var, axis=axis,
                                            output_mean_var=True, out=out)
    expected = forward_reference(data, gamma, beta, np.zeros(3), np.ones(3), axis=axis)
    np.testing.assert_allclose(batch_mean, expected["mean"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(invstd, expected["invstd"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(y, expected["y"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(moving_mean, expected["moving_mean"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(moving_var, expected["moving_var"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_bit_identical_between_runs(make_inputs, dtype_name, axis):
    inputs = make_inputs((16, 8, 33, 17), axis=axis, dtype=resolve_dtype(dtype_name))
    runs = [run_forward(inputs, axis=axis, fix_gamma=False, output_mean_var=True)
            for _ in range(2)]
    (y1, mean1, invstd1, state1), (y2, mean2, invstd2, state2) = runs
    for first, second in [(y1, y2), (mean1, mean2), (invstd1, invstd2),
                          (state1["moving_mean"], state2["moving_mean"]),
                          (state1["moving_var"], state2["moving_var"])]:
        assert first.tobytes() == second.tobytes()


@pytest.mark.parametrize("shape,axis", [((2, 3, 4), 1), ((5, 2), 0), ((3, 4, 2, 2), -1)])
def test_float16_values_that_overflow_in_float16_accumulation(shape, axis):
    """Sums of float16 data far beyond float16's range (65504) must not overflow: the
    accumulation is at least float32."""
    rng = np.random.default_rng(11)
    dtype = np.float16
    channels = shape[axis]
    big_shape = list(shape)
    big_shape[1 if axis % len(shape) == 0 else 0] *= 64  # many items, same channels
    data = (rng.uniform(1000, 2000, big_shape)).astype(dtype)
    gamma = np.ones(channels, np.float32)
    beta = np.zeros(channels, np.float32)
    moving_mean = np.zeros(channels, np.float32)
    moving_var = np.ones(channels, np.float32)
    y, mean, invstd = pybn.batch_norm(data, gamma, beta, moving_mean, moving_var, axis=axis,
                                      output_mean_var=True)
    expected = forward_reference(data, gamma, beta, np.zeros(channels), np.ones(channels),
                                 axis=axis)
    assert np.all(np.isfinite(y.astype(np.float64)))
    assert_close(mean, expected["mean"])
    assert_close(invstd, expected["invstd"])
    assert_close(y, expected["y"])


def test_gamma_and_beta_may_share_memory_when_only_read(make_inputs):
    """Two read-only inputs may be the same array (only outputs must not overlap inputs)."""
    inputs = make_inputs((4, 3, 5), dtype=np.float64)
    shared = inputs["gamma"]
    y = pybn.batch_norm(inputs["data"], shared, shared, inputs["moving_mean"].copy(),
                        inputs["moving_var"].copy(), fix_gamma=False)
    assert_close(y, forward_reference(inputs["data"], shared, shared, inputs["moving_mean"],
                                      inputs["moving_var"], fix_gamma=False)["y"])


def test_all_flag_combinations_are_accepted_as_keywords_only(make_inputs):
    inputs = make_inputs((2, 3), dtype=np.float32)
    with pytest.raises(TypeError):
        pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"], inputs["moving_mean"],
                        inputs["moving_var"], 1e-3)  # eps is keyword-only
