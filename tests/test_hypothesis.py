"""Property-based sweep (hypothesis) over shapes, axes, layouts, strides, flags and values:
forward and backward always equal the float64 model."""

import numpy as np
import pytest

import pybn
from reference import assert_close, assert_gradients_close, forward_reference, param_dtype

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    # Layout: a transpose of a C-order buffer, then optional steps / reversals per dimension.
    permutation = draw(st.permutations(range(ndim)))
    steps = draw(st.lists(st.sampled_from([1, 1, 2, -1, -2]), min_size=ndim, max_size=ndim))
    flags = dict(
        fix_gamma=draw(st.booleans()),
        use_global_stats=draw(st.booleans()),
        training=draw(st.booleans()),
        eps=draw(st.sampled_from([0.0, 1e-5, 1e-3, 0.1])),
        momentum=draw(st.sampled_from([0.0, 0.1, 0.9, 1.0])),
    )
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return shape, axis, permutation, steps, flags, dtype, seed


def strided_view(rng, shape, permutation, steps, dtype, loc, scale):
    """An array of `shape` whose memory is a permuted, stepped view of a larger buffer."""
    storage_shape = [0] * len(shape)
    for dim, size in enumerate(shape):
        storage_shape[dim] = size * abs(steps[dim])
    inverse = np.argsort(permutation)
    storage = (loc + scale * rng.standard_normal(
        [storage_shape[p] for p in permutation])).astype(dtype)
    view = storage.transpose(inverse)
    index = tuple(slice(None, None, step) for step in steps)
    view = view[index]
    assert view.shape == tuple(shape)
    return view


@settings(max_examples=120, deadline=None, derandomize=True)
@given(cases())
def test_matches_reference(case):
    shape, axis, permutation, steps, flags, dtype, seed = case
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    data = strided_view(rng, shape, permutation, steps, dtype, rng.uniform(-5, 5),
                        rng.uniform(0.1, 3))
    dy = strided_view(rng, shape, permutation, steps, dtype, 0.0, 1.0)
    pdtype = param_dtype(dtype)
    gamma = rng.uniform(0.5, 1.5, channels).astype(pdtype)
    beta = rng.uniform(-1, 1, channels).astype(pdtype)
    moving_mean = rng.uniform(-1, 1, channels).astype(pdtype)
    moving_var = rng.uniform(0.1, 2, channels).astype(pdtype)
    expected = forward_reference(data, gamma, beta, moving_mean, moving_var, axis=axis,
                                 **flags)

    gamma_buffer, moving_mean_buffer, moving_var_buffer = (
        gamma.copy(), moving_mean.copy(), moving_var.copy())
    out = np.full(shape, np.nan, dtype=dtype)
    y, mean, invstd = pybn.batch_norm(data, gamma_buffer, beta, moving_mean_buffer,
                                      moving_var_buffer, axis=axis, output_mean_var=True,
                                      out=out, **flags)
    assert_close(y, expected["y"], what="y")
    assert_close(mean, expected["mean"], what="mean")
    assert_close(invstd, expected["invstd"], what="invstd")
    assert_close(moving_mean_buffer, expected["moving_mean"], what="moving_mean")
    assert_close(moving_var_buffer, expected["moving_var"], what="moving_var")
    assert_close(gamma_buffer, expected["gamma"], what="gamma")

    backward_flags = {k: flags[k] for k in ("fix_gamma", "use_global_stats", "training")}
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, data, gamma, mean, invstd, axis=axis,
                                                 **backward_flags)
    assert_gradients_close((dx, dgamma, dbeta), dy, data, gamma, mean, invstd, axis=axis,
                           **backward_flags)
