"""Statistics that defeat naive kernels: outliers where a kernel takes its pivot, sorted data
(each chunk far from the others), offsets of 1e4 to 1e7 times the std. float32 data, float64
reference; mean and invstd within 1e-6 relative, y within 1e-4 absolute where std ~ 1."""
import numpy as np
import pytest

import pybn
from reference import forward_reference


def _check(x, axis, rtol=1e-6, y_atol=1e-4):
    channels = x.shape[axis]
    gamma = np.ones(channels, np.float32)
    beta = np.zeros(channels, np.float32)
    mm, mv = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    expected = forward_reference(x, gamma, beta, mm, mv, fix_gamma=False, axis=axis, eps=1e-5)
    y, mean, invstd = pybn.batch_norm(x, gamma, beta, mm, mv, fix_gamma=False, axis=axis, eps=1e-5,
                                      output_mean_var=True)
    np.testing.assert_allclose(mean, expected["mean"], rtol=rtol, atol=0, err_msg="mean")
    np.testing.assert_allclose(invstd, expected["invstd"], rtol=rtol, atol=0, err_msg="invstd")
    np.testing.assert_allclose(y.astype(np.float64), expected["y"], rtol=0, atol=y_atol, err_msg="y")


# Each layout reaches a kernel family: long runs (inner >= 512), the row layout over maps of
# 7x7 (its pivot from the first rows of a chunk) and channel-last rows (inner 1).
LAYOUTS = ["long_runs", "7x7_maps", "channel_last"]


def _layout(data_cm, layout):
    """data given as (C, M) -> (array, axis): (4, C, M/4) NCHW-like, (M/49, C, 49) with M cut
    to a multiple of 49, or (M, C) channel-last."""
    channels, items = data_cm.shape
    if layout == "long_runs":
        return np.ascontiguousarray(data_cm.reshape(channels, 4, items // 4).transpose(1, 0, 2)), 1
    if layout == "7x7_maps":
        maps = data_cm[:, :items - items % 49].reshape(channels, -1, 49)
        return np.ascontiguousarray(maps.transpose(1, 0, 2)), 1
    return np.ascontiguousarray(data_cm.T), -1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("offset", [1e4, 1e7])
def test_large_offsets(rng, layout, offset):
    data = offset + rng.standard_normal((3, 400_000)) * np.array([[1.0], [offset / 1e4], [0.01 * offset / 1e4]])
    _check(*_layout(data.astype(np.float32), layout), y_atol=1e-4 if offset <= 1e4 else 1.0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_outliers_at_the_start_of_every_chunk(rng, layout):
    """Kernels take a pivot from the start of each chunk; put a 1e6-sigma outlier there (and
    everywhere at a stride of 512 elements, whatever the chunk size)."""
    data = 1e4 + rng.standard_normal((2, 262_144))
    data[:, ::512] += 1e6
    _check(*_layout(data.astype(np.float32), layout), y_atol=1e-4 * np.sqrt(data.var()))


@pytest.mark.parametrize("shape", [(32, 8192), (24, 2048), (40, 1000, 3)])
def test_outliers_in_the_first_row_of_few_rows(rng, shape):
    """Few rows of many channels: the row layout's chunks are then a few rows each, their
    pivot the mean of the first rows (fewer than 16 where the chunk has few). A 300-sigma
    outlier in row 0 of every channel: a pivot from row 0 alone misses 1e-6 (3e-6 to 6e-6)."""
    sign = rng.choice([-1.0, 1.0], (1, shape[1]) + (1,) * (len(shape) - 2))
    data = 1e4 + rng.standard_normal(shape)
    data[0:1] += 300 * sign
    _check(data.astype(np.float32), 1, y_atol=1e-4 * np.sqrt(data.var(axis=0).max()))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sorted_data(rng, layout):
    """A trend: every chunk's mean is far from the next one's."""
    data = np.sort(1e4 + rng.standard_normal((2, 300_000)) * 100, axis=1)
    _check(*_layout(data.astype(np.float32), layout), y_atol=1e-4 * 100)


def test_constant_channels_have_zero_variance(rng):
    x = np.full((6, 3, 1000), 12345.678, np.float32)
    x[:, 1] = 0.0
    x[:, 2] = -3e7
    _check(x, 1)
