"""The oracle checked on its own (no pybn): tests/reference.py's forward normalizes as
described, and its backward is the derivative of its forward (central differences)."""

import numpy as np
import pytest

from reference import backward_reference, forward_reference


def test_training_forward_normalizes_each_channel(rng):
    data = rng.normal(3.0, 2.0, (50, 4, 6))
    gamma = rng.uniform(0.5, 1.5, 4)
    beta = rng.uniform(-1, 1, 4)
    eps = 1e-3
    result = forward_reference(data, gamma, beta, np.zeros(4), np.ones(4), eps=eps,
                               fix_gamma=False)
    per_channel = result["y"].transpose(1, 0, 2).reshape(4, -1)
    var = data.transpose(1, 0, 2).reshape(4, -1).var(axis=1)
    np.testing.assert_allclose(per_channel.mean(axis=1), beta, atol=1e-12)
    np.testing.assert_allclose(per_channel.var(axis=1), gamma ** 2 * var / (var + eps),
                               rtol=1e-12)
    np.testing.assert_allclose(result["invstd"], 1 / np.sqrt(var + eps), rtol=1e-14)


@pytest.mark.parametrize("training,use_global_stats", [(True, False), (True, True),
                                                       (False, False)])
def test_backward_is_the_derivative_of_the_forward(rng, training, use_global_stats):
    shape, axis = (3, 4, 2), 1
    data = rng.normal(0.0, 1.0, shape)
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.uniform(-1, 1, 4)
    moving_mean, moving_var = rng.uniform(-1, 1, 4), rng.uniform(0.5, 2, 4)
    weights = rng.standard_normal(shape)
    flags = dict(fix_gamma=False, training=training, use_global_stats=use_global_stats,
                 axis=axis)

    def loss():
        return np.sum(weights * forward_reference(data, gamma, beta, moving_mean, moving_var,
                                                  **flags)["y"])

    def numerical(point):
        grad = np.zeros_like(point)
        for index in np.ndindex(point.shape):
            original = point[index]
            point[index] = original + 1e-6
            above = loss()
            point[index] = original - 1e-6
            below = loss()
            point[index] = original
            grad[index] = (above - below) / 2e-6
        return grad

    stats = forward_reference(data, gamma, beta, moving_mean, moving_var, **flags)
    dx, dgamma, dbeta = backward_reference(weights, data, gamma, stats["mean"],
                                           stats["invstd"], **flags)
    np.testing.assert_allclose(dx, numerical(data), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dgamma, numerical(gamma), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dbeta, numerical(beta), rtol=1e-6, atol=1e-7)


def test_invstd_is_zero_where_var_plus_eps_is_zero():
    result = forward_reference(np.array([[1.0, 2.0]]), np.ones(2), np.array([0.5, -0.5]),
                               np.zeros(2), np.ones(2), eps=0.0)
    np.testing.assert_array_equal(result["invstd"], [0.0, 0.0])
    np.testing.assert_array_equal(result["y"], [[0.5, -0.5]])
