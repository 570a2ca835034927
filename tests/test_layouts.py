"""Memory layouts (SPEC.md "Shapes and types"): any dense layout (C order, channels_last,
Fortran order, any permutation) and non-dense strided views give the numbers of the C-order
copy; outputs written through out= / dx= may be any dense layout."""

import itertools

import numpy as np
import pytest

import pybn
from conftest import DTYPE_NAMES, poisoned, resolve_dtype
from reference import (assert_close, assert_gradients_close, forward_reference,
                       param_dtype)


def params_for(rng, channels, dtype):
    pdtype = param_dtype(dtype)
    return {
        "gamma": rng.uniform(0.5, 1.5, channels).astype(pdtype),
        "beta": rng.uniform(-1, 1, channels).astype(pdtype),
        "moving_mean": rng.uniform(-1, 1, channels).astype(pdtype),
        "moving_var": rng.uniform(0.5, 2, channels).astype(pdtype),
    }


def forward_and_backward(data, params, dy, axis, training=True, out=None, dx=None):
    """pybn forward then backward on copies of the parameters; returns everything produced."""
    state = {name: array.copy() for name, array in params.items()}
    y, mean, invstd = pybn.batch_norm(data, state["gamma"], state["beta"], state["moving_mean"],
                                      state["moving_var"], axis=axis, fix_gamma=False,
                                      training=training, output_mean_var=True, out=out)
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, data, state["gamma"], mean, invstd,
                                                 axis=axis, fix_gamma=False,
                                                 training=training, dx=dx)
    return {"y": y, "mean": mean, "invstd": invstd, "moving_mean": state["moving_mean"],
            "moving_var": state["moving_var"], "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def check_against_reference(result, data, params, dy, axis, training=True):
    expected = forward_reference(data, **params, fix_gamma=False, training=training, axis=axis)
    for name in ("y", "mean", "invstd", "moving_mean", "moving_var"):
        assert_close(result[name], expected[name], what=name)
    # The backward gets the statistics pybn returned, as documented.
    assert_gradients_close((result["dx"], result["dgamma"], result["dbeta"]), dy, data,
                           params["gamma"], result["mean"], result["invstd"], fix_gamma=False,
                           training=training, axis=axis)


def check_same_as_c_order_copy(result, data, params, dy, axis, training=True):
    """The same call on C-order copies gives the same numbers (within rounding: the reduction
    order may differ between layouts)."""
    copy = forward_and_backward(np.ascontiguousarray(data), params, np.ascontiguousarray(dy),
                                axis, training)
    for name, value in result.items():
        assert_close(value, copy[name].astype(np.float64), dtype=value.dtype,
                     what=f"{name} vs C-order copy")


def channels_last(rng, shape_nchw, dtype):
    n, c, h, w = shape_nchw
    values = rng.standard_normal((n, h, w, c)) * rng.uniform(0.5, 2, c) + rng.uniform(-3, 3, c)
    return values.astype(dtype).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_channels_last_view(rng, dtype_name, training):
    """An NHWC buffer seen as NCHW through transpose (PyTorch's channels_last), axis=1."""
    dtype = resolve_dtype(dtype_name)
    data = channels_last(rng, (3, 5, 4, 6), dtype)
    assert not data.flags.c_contiguous
    dy = channels_last(rng, (3, 5, 4, 6), dtype)
    params = params_for(rng, 5, dtype)
    result = forward_and_backward(data, params, dy, axis=1, training=training)
    check_against_reference(result, data, params, dy, axis=1, training=training)
    check_same_as_c_order_copy(result, data, params, dy, axis=1, training=training)


@pytest.mark.parametrize("out_layout", ["c_order", "channels_last"])
@pytest.mark.parametrize("data_layout", ["c_order", "channels_last"])
def test_out_and_dx_in_any_dense_layout(rng, data_layout, out_layout):
    dtype = np.float32
    shape = (2, 4, 3, 5)
    if data_layout == "c_order":
        data = rng.normal(1.0, 2.0, shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
    else:
        data = channels_last(rng, shape, dtype)
        dy = channels_last(rng, shape, dtype)
    if out_layout == "c_order":
        out, dx = poisoned(shape, dtype), poisoned(shape, dtype)
    else:
        nhwc = (shape[0], shape[2], shape[3], shape[1])
        out = poisoned(nhwc, dtype).transpose(0, 3, 1, 2)
        dx = poisoned(nhwc, dtype).transpose(0, 3, 1, 2)
    params = params_for(rng, 4, dtype)
    result = forward_and_backward(data, params, dy, axis=1, out=out, dx=dx)
    assert np.shares_memory(result["y"], out) and np.shares_memory(result["dx"], dx)
    check_against_reference(result, data, params, dy, axis=1)
    assert_close(out, result["y"].astype(np.float64), dtype=dtype)


PERMUTATIONS = list(itertools.permutations(range(4)))


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("perm", PERMUTATIONS, ids=lambda p: "".join(map(str, p)))
def test_every_axis_permutation(rng, perm, axis):
    """A C-order buffer of shape (2, 3, 4, 5) viewed through every transpose."""
    base = rng.normal(0.5, 1.5, (2, 3, 4, 5))
    data = base.transpose(perm)
    dy = rng.standard_normal((2, 3, 4, 5)).transpose(perm)
    params = params_for(rng, data.shape[axis], np.float64)
    result = forward_and_backward(data, params, dy, axis=axis)
    check_against_reference(result, data, params, dy, axis=axis)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_fortran_order(rng, dtype_name):
    dtype = resolve_dtype(dtype_name)
    data = np.asfortranarray(rng.normal(2, 3, (5, 4, 6)).astype(dtype))
    dy = np.asfortranarray(rng.standard_normal((5, 4, 6)).astype(dtype))
    params = params_for(rng, 4, dtype)
    out = np.asfortranarray(poisoned((5, 4, 6), dtype))
    result = forward_and_backward(data, params, dy, axis=1, out=out)
    check_against_reference(result, data, params, dy, axis=1)
    check_same_as_c_order_copy(result, data, params, dy, axis=1)


def _step_last(a):
    return a[..., ::2]


def _reverse_first(a):
    return a[::-1]


def _reverse_channels(a):
    return a[:, ::-1]


def _step_channels(a):
    return a[:, ::2]


def _inner_window(a):
    return a[1:, :, 2:-1]


def _reversed_and_stepped(a):
    return a[::-1, 1::2, ::-2]


NON_DENSE_VIEWS = [_step_last, _reverse_first, _reverse_channels, _step_channels,
                   _inner_window, _reversed_and_stepped]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("view", NON_DENSE_VIEWS, ids=lambda f: f.__name__.strip("_"))
def test_non_dense_inputs(rng, view, dtype_name, training):
    dtype = resolve_dtype(dtype_name)
    big = rng.normal(1.0, 2.0, (5, 8, 9)).astype(dtype)
    big_dy = rng.standard_normal((5, 8, 9)).astype(dtype)
    data, dy = view(big), view(big_dy)
    big_before = big.copy()
    params = params_for(rng, data.shape[1], dtype)
    out = poisoned(data.shape, dtype)
    dx = poisoned(data.shape, dtype)
    result = forward_and_backward(data, params, dy, axis=1, training=training, out=out, dx=dx)
    check_against_reference(result, data, params, dy, axis=1, training=training)
    check_same_as_c_order_copy(result, data, params, dy, axis=1, training=training)
    np.testing.assert_array_equal(big, big_before)


def test_broadcast_input(rng):
    """A zero-stride (broadcast, read-only) data array."""
    row = rng.normal(0.0, 1.0, (1, 3, 7))
    data = np.broadcast_to(row, (4, 3, 7))
    dy = rng.standard_normal((4, 3, 7))
    params = params_for(rng, 3, np.float64)
    result = forward_and_backward(data, params, dy, axis=1)
    check_against_reference(result, data, params, dy, axis=1)


def test_size_one_dimensions_with_arbitrary_strides(rng):
    """A dense array whose size-1 dimensions carry meaningless strides (as PyTorch and DLPack
    producers emit) is still dense: accepted as data and as out."""
    base = rng.normal(0, 1, (4, 3, 5))
    itemsize = base.itemsize
    data = np.lib.stride_tricks.as_strided(
        base, shape=(4, 1, 3, 5), strides=(15 * itemsize, 999 * itemsize, 5 * itemsize,
                                           itemsize))
    out_storage = poisoned((4, 3, 5), np.float64)
    out = np.lib.stride_tricks.as_strided(out_storage, shape=(4, 1, 3, 5),
                                          strides=(15 * itemsize, 7 * itemsize,
                                                   5 * itemsize, itemsize))
    dy = rng.standard_normal((4, 1, 3, 5))
    params = params_for(rng, 3, np.float64)
    result = forward_and_backward(data, params, dy, axis=2, out=out)
    check_against_reference(result, data, params, dy, axis=2)
    assert_close(out_storage.reshape(4, 1, 3, 5), result["y"])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_in_place_channels_last(rng, dtype_name, training):
    dtype = resolve_dtype(dtype_name)
    data = channels_last(rng, (2, 6, 3, 4), dtype)
    original = data.copy()
    params = params_for(rng, 6, dtype)
    state = {name: array.copy() for name, array in params.items()}
    y = pybn.batch_norm(data, state["gamma"], state["beta"], state["moving_mean"],
                        state["moving_var"], fix_gamma=False, training=training, out=data)
    assert np.shares_memory(y, data)
    expected = forward_reference(original, **params, fix_gamma=False, training=training)
    assert_close(data, expected["y"])
    assert_close(state["moving_mean"], expected["moving_mean"])


@pytest.mark.parametrize("view", [lambda a: a[::2], lambda a: a[::-1], lambda a: a[1::3]],
                         ids=["step2", "reversed", "step3"])
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
def test_strided_parameters_and_statistics(rng, view, dtype_name):
    """gamma, beta, moving_mean, moving_var (and the backward's mean / invstd) as strided 1-D
    views: read through their strides, and the in-place updates (moving statistics, gamma with
    fix_gamma) land in the viewed elements only."""
    dtype = resolve_dtype(dtype_name)
    channels = 4
    data = rng.normal(1, 2, (6, channels, 5)).astype(dtype)
    dy = rng.standard_normal(data.shape).astype(dtype)
    pdtype = param_dtype(dtype)
    covered = np.zeros(3 * channels, bool)
    view(covered)[:channels] = True

    def strided(values):
        """A view with `view`'s strides into a storage filled with -77 elsewhere."""
        storage = np.full(3 * channels, -77.0, dtype=pdtype)
        target = view(storage)[:channels]
        target[...] = values
        return storage, target

    storages, views = {}, {}
    for name, values in params_for(rng, channels, dtype).items():
        storages[name], views[name] = strided(values)

    for fix_gamma in (False, True):
        before = {name: view_.copy() for name, view_ in views.items()}
        y, mean, invstd = pybn.batch_norm(data, views["gamma"], views["beta"],
                                          views["moving_mean"], views["moving_var"],
                                          fix_gamma=fix_gamma, output_mean_var=True)
        expected = forward_reference(data, **before, fix_gamma=fix_gamma)
        assert_close(y, expected["y"])
        assert_close(mean, expected["mean"])
        for name in ("moving_mean", "moving_var", "gamma"):
            assert_close(views[name], expected[name], what=name)
        for name, storage in storages.items():
            assert np.all(storage[~covered] == -77.0), f"{name}: wrote outside the view"

    # The backward reads gamma / mean / invstd through strides as well.
    gamma = rng.uniform(0.5, 1.5, channels).astype(pdtype)
    _, gamma_view = strided(gamma)
    _, mean_view = strided(mean)
    _, invstd_view = strided(invstd)
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, data, gamma_view, mean_view, invstd_view,
                                                 fix_gamma=False)
    assert_gradients_close((dx, dgamma, dbeta), dy, data, gamma, mean, invstd, fix_gamma=False)


@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape,axis", [
    ((257, 1031), -1),        # many channels, channel axis innermost
    ((3, 1031, 5), 1),        # many channels, short inner runs
    ((1, 1, 200003), 1),      # one channel, one long run
    ((200003, 1), 1),         # one channel, stride-1 items with C == 1 last
    ((7, 2, 3001), 1),        # two channels, odd lengths (SIMD tails)
])
def test_extreme_channel_counts(rng, shape, axis, dtype_name):
    """Shapes that stress the work split (threads over channels or over items) and the
    vector-loop tails."""
    dtype = resolve_dtype(dtype_name)
    channels = shape[axis]
    data = rng.normal(2.0, 1.5, shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    params = params_for(rng, channels, dtype)
    out = poisoned(shape, dtype)
    dx = poisoned(shape, dtype)
    result = forward_and_backward(data, params, dy, axis=axis, out=out, dx=dx)
    check_against_reference(result, data, params, dy, axis=axis)
