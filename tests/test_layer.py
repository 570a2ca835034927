"""pybn.BatchNorm, the layer holding gamma, beta and the moving statistics (SPEC.md "Python
API"), held to the same float64 model as the functions."""

import numpy as np
import pytest

import pybn
from conftest import resolve_dtype
from reference import assert_close, backward_reference, forward_reference


def test_initial_state():
    layer = pybn.BatchNorm(5)
    expected = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_var": 1.0,
                "grad_gamma": 0.0, "grad_beta": 0.0}
    for name, value in expected.items():
        array = getattr(layer, name)
        assert isinstance(array, np.ndarray), name
        assert array.shape == (5,) and array.dtype == np.float32, name
        np.testing.assert_array_equal(array, np.full(5, value, np.float32))


def test_float64_layer_holds_float64_parameters():
    layer = pybn.BatchNorm(3, dtype="float64")
    for name in ("gamma", "beta", "moving_mean", "moving_var", "grad_gamma", "grad_beta"):
        assert getattr(layer, name).dtype == np.float64, name


@pytest.mark.parametrize("axis", [1, -1, 0])
@pytest.mark.parametrize("fix_gamma", [False, True])
def test_training_steps(rng, fix_gamma, axis):
    """Two forward+backward steps: y and dx match the model, the moving statistics compound,
    the parameter gradients accumulate, and zero_grad clears them."""
    shape = (6, 4, 5)
    channels = shape[axis]
    layer = pybn.BatchNorm(channels, axis=axis, eps=1e-2, momentum=0.75, fix_gamma=fix_gamma,
                           dtype="float64")
    gamma = rng.uniform(0.5, 1.5, channels)
    beta = rng.uniform(-1, 1, channels)
    layer.gamma[...] = gamma
    layer.beta[...] = beta
    moving_mean, moving_var = np.zeros(channels), np.ones(channels)
    total_dgamma, total_dbeta = np.zeros(channels), np.zeros(channels)

    for step in range(2):
        x = rng.normal(step, 1 + step, shape)
        dy = rng.standard_normal(shape)
        y = layer.forward(x, training=True)
        expected = forward_reference(x, gamma, beta, moving_mean, moving_var, eps=1e-2,
                                     momentum=0.75, fix_gamma=fix_gamma, axis=axis)
        assert_close(y, expected["y"])
        assert_close(layer.moving_mean, expected["moving_mean"])
        assert_close(layer.moving_var, expected["moving_var"])
        assert_close(layer.gamma, expected["gamma"])
        moving_mean, moving_var = expected["moving_mean"], expected["moving_var"]

        dx = layer.backward(dy)
        expected_dx, dgamma, dbeta = backward_reference(
            dy, x, gamma, expected["mean"], expected["invstd"], fix_gamma=fix_gamma, axis=axis)
        assert_close(dx, expected_dx)
        total_dgamma += dgamma
        total_dbeta += dbeta
        assert_close(layer.grad_gamma, total_dgamma, scale=np.abs(total_dgamma).max() + 1)
        assert_close(layer.grad_beta, total_dbeta)

    if fix_gamma:
        np.testing.assert_array_equal(layer.grad_gamma, np.zeros(channels))
        np.testing.assert_array_equal(layer.gamma, np.ones(channels))
    layer.zero_grad()
    np.testing.assert_array_equal(layer.grad_gamma, np.zeros(channels))
    np.testing.assert_array_equal(layer.grad_beta, np.zeros(channels))


def test_call_is_forward(rng):
    layer = pybn.BatchNorm(3, fix_gamma=False)
    twin = pybn.BatchNorm(3, fix_gamma=False)
    x = rng.normal(1, 2, (4, 3, 2)).astype(np.float32)
    for training in (True, False):
        np.testing.assert_array_equal(layer(x, training=training),
                                      twin.forward(x, training=training))
    np.testing.assert_array_equal(layer.moving_mean, twin.moving_mean)


@pytest.mark.parametrize("use_global_stats", [False, True])
def test_inference_uses_moving_statistics(rng, use_global_stats):
    layer = pybn.BatchNorm(4, fix_gamma=False, use_global_stats=use_global_stats)
    moving_mean = rng.uniform(-1, 1, 4).astype(np.float32)
    moving_var = rng.uniform(0.5, 2, 4).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    layer.moving_mean[...] = moving_mean
    layer.moving_var[...] = moving_var
    layer.gamma[...] = gamma
    x = rng.normal(0, 1, (5, 4, 3)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    # use_global_stats: even a training forward normalizes with the moving statistics.
    training = use_global_stats
    y = layer(x, training=training)
    expected = forward_reference(x, gamma, layer.beta, moving_mean, moving_var,
                                 fix_gamma=False, training=False)
    assert_close(y, expected["y"])
    np.testing.assert_array_equal(layer.moving_mean, moving_mean)
    np.testing.assert_array_equal(layer.moving_var, moving_var)

    dx = layer.backward(dy)
    expected_dx, dgamma, dbeta = backward_reference(dy, x, gamma, expected["mean"],
                                                    expected["invstd"], fix_gamma=False,
                                                    training=False)
    assert_close(dx, expected_dx)
    assert_close(layer.grad_gamma, dgamma)
    assert_close(layer.grad_beta, dbeta)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_16_bit_data_with_float32_layer(rng, dtype_name):
    dtype = resolve_dtype(dtype_name)
    layer = pybn.BatchNorm(3, fix_gamma=False)
    x = rng.normal(1, 2, (8, 3, 4)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = layer(x)
    assert y.dtype == dtype
    expected = forward_reference(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3),
                                 fix_gamma=False)
    assert_close(y, expected["y"])
    assert_close(layer.moving_mean, expected["moving_mean"])
    dx = layer.backward(dy)
    assert dx.dtype == dtype
    expected_dx, dgamma, dbeta = backward_reference(dy, x, np.ones(3), expected["mean"],
                                                    expected["invstd"], fix_gamma=False)
    assert_close(dx, expected_dx)
    assert_close(layer.grad_gamma, dgamma)
    assert_close(layer.grad_beta, dbeta)


def test_wrong_channel_count_is_rejected(rng):
    layer = pybn.BatchNorm(3)
    x = rng.normal(0, 1, (4, 5, 2)).astype(np.float32)
    with pytest.raises(ValueError):
        layer(x)
    np.testing.assert_array_equal(layer.moving_mean, np.zeros(3, np.float32))
    np.testing.assert_array_equal(layer.moving_var, np.ones(3, np.float32))


def test_wrong_data_dtype_is_rejected(rng):
    layer = pybn.BatchNorm(3)  # float32 parameters: float64 data does not fit them
    with pytest.raises(TypeError):
        layer(rng.normal(0, 1, (4, 3)))
    np.testing.assert_array_equal(layer.moving_mean, np.zeros(3, np.float32))
