"""Kinds of input SPEC.md accepts besides NumPy arrays: the buffer protocol and __dlpack__
host tensors; and kinds it rejects, with the argument named."""
import array

import numpy as np
import pytest

import pybn
from reference import assert_close, backward_reference, forward_reference


class DLPackOnly:
    """A host tensor that offers nothing but the DLPack protocol (like a CPU torch tensor)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, *args, **kwargs):
        return self._array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def _params(rng, channels):
    return (rng.uniform(0.5, 1.5, channels).astype(np.float32), rng.uniform(-1, 1, channels).astype(np.float32),
            np.zeros(channels, np.float32), np.ones(channels, np.float32))


def test_dlpack_host_tensor_as_data(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    gamma, beta, mm, mv = _params(rng, 3)
    expected = forward_reference(x, gamma, beta, mm, mv, fix_gamma=False)
    y, mean, invstd = pybn.batch_norm(DLPackOnly(x), gamma, beta, mm, mv, fix_gamma=False, output_mean_var=True)
    assert isinstance(y, np.ndarray)
    assert_close(y, expected["y"], what="y")
    assert_close(mv, expected["moving_var"], what="moving_var updated through the plain array")
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dgamma, dbeta = pybn.batch_norm_backward(DLPackOnly(dy), DLPackOnly(x), gamma, mean, invstd, fix_gamma=False)
    ref = backward_reference(dy, x, gamma, mean, invstd, fix_gamma=False)
    assert_close(dbeta, ref[2], what="dbeta")


def test_buffer_protocol_parameters_are_written_in_place(rng):
    x = rng.standard_normal((6, 2)).astype(np.float64)
    moving_mean = array.array("d", [0.5, -0.5])
    moving_var = array.array("d", [1.0, 2.0])
    gamma = array.array("d", [7.0, 7.0])
    beta = memoryview(array.array("d", [0.0, 1.0]))
    expected = forward_reference(x, np.array(gamma), np.array(beta), np.array(moving_mean), np.array(moving_var),
                                 momentum=0.5)
    y = pybn.batch_norm(memoryview(x), gamma, beta, moving_mean, moving_var, momentum=0.5)
    assert_close(y, expected["y"], what="y")
    assert_close(np.array(moving_mean), expected["moving_mean"], what="moving_mean")
    assert_close(np.array(moving_var), expected["moving_var"], what="moving_var")
    assert list(gamma) == [1.0, 1.0], "fix_gamma writes 1 through the buffer"


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], "abc", 3.0, None])
def test_non_arrays_are_type_errors_naming_the_argument(rng, bad):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    gamma, beta, mm, mv = _params(rng, 3)
    with pytest.raises(TypeError, match="data"):
        pybn.batch_norm(bad, gamma, beta, mm, mv)
    before = mm.copy()
    with pytest.raises(TypeError, match="beta"):
        pybn.batch_norm(x, gamma, bad, mm, mv)
    np.testing.assert_array_equal(mm, before)


def test_read_only_moving_statistics_are_refused_before_any_write(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    gamma, beta, mm, mv = _params(rng, 3)
    mm.setflags(write=False)
    gamma_before, mv_before = gamma.copy(), mv.copy()
    with pytest.raises(ValueError, match="moving_mean"):
        pybn.batch_norm(x, gamma, beta, mm, mv)
    np.testing.assert_array_equal(gamma, gamma_before)
    np.testing.assert_array_equal(mv, mv_before)
    # inference does not write the moving statistics: read-only is fine there
    y = pybn.batch_norm(x, gamma, beta, mm, mv, training=False, fix_gamma=False)
    assert_close(y, forward_reference(x, gamma, beta, mm, mv, training=False, fix_gamma=False)["y"], what="y")
