"""Finite-difference checks of pybn.batch_norm_backward in float64: the gradient of a random
linear functional L = sum(w * y) with respect to data, gamma and beta, by central
differences of pybn's own forward. This holds the backward to the forward independently of
the reference model."""

import numpy as np
import pytest

import pybn

STEP = 1e-5


def loss(weights, data, gamma, beta, moving_mean, moving_var, flags):
    """L = sum(weights * y) for one forward call on copies (the forward updates moving stats
    and, with fix_gamma, gamma)."""
    y = pybn.batch_norm(data, gamma.copy(), beta, moving_mean.copy(), moving_var.copy(),
                        **flags)
    return float(np.sum(weights * y))


def numerical_gradient(function, point):
    """Central differences of function() w.r.t. every element of `point`, changed in place."""
    gradient = np.zeros_like(point)
    flat_point = point.reshape(-1)
    flat_gradient = gradient.reshape(-1)
    for index in range(flat_point.size):
        original = flat_point[index]
        flat_point[index] = original + STEP
        above = function()
        flat_point[index] = original - STEP
        below = function()
        flat_point[index] = original
        flat_gradient[index] = (above - below) / (2 * STEP)
    return gradient


@pytest.mark.parametrize("fix_gamma", [False, True])
@pytest.mark.parametrize("training,use_global_stats", [(True, False), (True, True),
                                                       (False, False)])
@pytest.mark.parametrize("shape,axis", [((3, 4, 5), 1), ((6, 3), -1), ((2, 3, 2, 2), 0)])
def test_gradients_match_finite_differences(rng, shape, axis, training, use_global_stats,
                                            fix_gamma):
    channels = shape[axis]
    data = rng.normal(0.5, 1.5, shape)
    gamma = rng.uniform(0.5, 1.5, channels)
    beta = rng.uniform(-1, 1, channels)
    moving_mean = rng.uniform(-1, 1, channels)
    moving_var = rng.uniform(0.5, 2, channels)
    weights = rng.standard_normal(shape)
    flags = dict(training=training, use_global_stats=use_global_stats, fix_gamma=fix_gamma,
                 axis=axis, eps=1e-3)

    def current_loss():
        return loss(weights, data, gamma, beta, moving_mean, moving_var, flags)

    numerical_dx = numerical_gradient(current_loss, data)
    numerical_dgamma = numerical_gradient(current_loss, gamma)
    numerical_dbeta = numerical_gradient(current_loss, beta)

    _, mean, invstd = pybn.batch_norm(data, gamma.copy(), beta, moving_mean.copy(),
                                      moving_var.copy(), output_mean_var=True, **flags)
    backward_flags = {key: value for key, value in flags.items() if key != "eps"}
    dx, dgamma, dbeta = pybn.batch_norm_backward(weights, data, gamma, mean, invstd,
                                                 **backward_flags)

    np.testing.assert_allclose(dx, numerical_dx, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dbeta, numerical_dbeta, rtol=1e-6, atol=1e-6)
    if fix_gamma:
        # gamma is taken as 1, so y does not depend on it and its gradient is 0.
        np.testing.assert_array_equal(numerical_dgamma, np.zeros(channels))
        np.testing.assert_array_equal(dgamma, np.zeros(channels))
    else:
        np.testing.assert_allclose(dgamma, numerical_dgamma, rtol=1e-6, atol=1e-6)
