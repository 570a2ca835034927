"""The float64 NumPy model of SPEC.md: the oracle every pybn test is held to.

Written plainly on purpose: every input is cast to float64, the channel axis is moved last so
the data is an (M, C) matrix, and each formula of SPEC.md "Forward" / "Backward" appears once,
in the same words. No fused formulas, no single-pass variance, no reuse of pybn's code.

The second half of this file says how close pybn must come to the model for each dtype.
"""

import numpy as np

# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def _as_float64(array):
    return np.asarray(array).astype(np.float64)


def _channels_last_matrix(x, axis):
    """x (float64, any shape) -> (M, C) matrix with the channel axis last, plus what is
    needed to undo it."""
    moved = np.moveaxis(x, axis, -1)
    channels = x.shape[axis]
    return moved.reshape(-1, channels), moved.shape


def _from_channels_last_matrix(matrix, moved_shape, axis):
    return np.moveaxis(matrix.reshape(moved_shape), -1, axis)


def inverse_std(var, eps):
    """invstd = 1 / sqrt(var + eps), and 0 where var + eps == 0 (SPEC.md)."""
    total = np.asarray(var, dtype=np.float64) + eps
    invstd = np.zeros_like(total)
    nonzero = total != 0  # NaN compares unequal, so NaN stays NaN below
    with np.errstate(divide="ignore", invalid="ignore"):
        invstd[nonzero] = 1.0 / np.sqrt(total[nonzero])
    return invstd


def forward_reference(data, gamma, beta, moving_mean, moving_var, eps=1e-3, momentum=0.9,
                      fix_gamma=True, use_global_stats=False, training=True, axis=1):
    """SPEC.md "Forward" in float64.

    Returns a dict of float64 arrays: y (data's shape), mean and invstd (the statistics used to
    normalize), moving_mean and moving_var (their values after the call) and gamma (the gamma
    buffer after the call: all ones with fix_gamma).
    """
    x = _as_float64(data)
    axis = axis % x.ndim
    x_matrix, moved_shape = _channels_last_matrix(x, axis)
    items_per_channel = x_matrix.shape[0]

    gamma_after = np.ones(x.shape[axis]) if fix_gamma else _as_float64(gamma)
    beta = _as_float64(beta)
    moving_mean = _as_float64(moving_mean)
    moving_var = _as_float64(moving_var)

    with np.errstate(invalid="ignore", over="ignore"):
        if training and not use_global_stats:
            # Two passes: the mean first, then the biased variance around it.
            mean = x_matrix.sum(axis=0) / items_per_channel
            var = ((x_matrix - mean) ** 2).sum(axis=0) / items_per_channel
            invstd = inverse_std(var, eps)
            new_moving_mean = moving_mean * momentum + mean * (1 - momentum)
            new_moving_var = moving_var * momentum + var * (1 - momentum)
        else:
            mean = moving_mean.copy()
            invstd = inverse_std(moving_var, eps)
            new_moving_mean = moving_mean.copy()
            new_moving_var = moving_var.copy()

        y_matrix = (x_matrix - mean) * invstd * gamma_after + beta

    return {
        "y": _from_channels_last_matrix(y_matrix, moved_shape, axis),
        "mean": mean,
        "invstd": invstd,
        "moving_mean": new_moving_mean,
        "moving_var": new_moving_var,
        "gamma": gamma_after,
    }


def backward_reference(dy, data, gamma, mean, invstd, fix_gamma=True, use_global_stats=False,
                       training=True, axis=1):
    """SPEC.md "Backward" in float64; mean and invstd are those the forward used.

    Returns (dx, dgamma, dbeta) as float64 arrays.
    """
    x = _as_float64(data)
    axis = axis % x.ndim
    x_matrix, moved_shape = _channels_last_matrix(x, axis)
    dy_matrix, _ = _channels_last_matrix(_as_float64(dy), axis)
    items_per_channel = x_matrix.shape[0]

    g = np.ones(x.shape[axis]) if fix_gamma else _as_float64(gamma)
    mean = _as_float64(mean)
    invstd = _as_float64(invstd)

    with np.errstate(invalid="ignore", over="ignore"):
        centered = x_matrix - mean
        sum_dy = dy_matrix.sum(axis=0)
        dot = (centered * dy_matrix).sum(axis=0)

        if training and not use_global_stats:
            dx_matrix = (dy_matrix
                         - sum_dy / items_per_channel
                         - centered * invstd ** 2 * dot / items_per_channel) * invstd * g
        else:
            dx_matrix = dy_matrix * invstd * g

        dgamma = np.zeros(x.shape[axis]) if fix_gamma else dot * invstd
        dbeta = sum_dy

    return _from_channels_last_matrix(dx_matrix, moved_shape, axis), dgamma, dbeta


# ---------------------------------------------------------------------------------------------
# How close pybn must come to the model
# ---------------------------------------------------------------------------------------------

# Unit roundoff (machine epsilon) by dtype name; bfloat16 comes from ml_dtypes.
MACHINE_EPSILON = {
    "float16": 2.0 ** -10,
    "bfloat16": 2.0 ** -7,
    "float32": 2.0 ** -23,
    "float64": 2.0 ** -52,
}

# Relative error allowed for a value computed in the accumulation type: float32 for 16- and
# 32-bit data, float64 for float64 data (SPEC.md "Shapes and types").
COMPUTE_RTOL = {"float32": 1e-5, "float64": 1e-12}


def dtype_name(dtype):
    return np.dtype(dtype).name


def param_dtype(data_dtype):
    """SPEC.md: float32 parameters and statistics for 16-bit data, else the data's dtype."""
    if dtype_name(data_dtype) in ("float16", "bfloat16"):
        return np.dtype(np.float32)
    return np.dtype(data_dtype)


def tolerance(dtype, scale):
    """(rtol, atol) for a result stored as `dtype` whose reference values are of magnitude
    `scale`: the rounding of the computation in the accumulation type plus, for 16-bit
    results, two ulps of the stored dtype."""
    name = dtype_name(dtype)
    compute = COMPUTE_RTOL["float64" if name == "float64" else "float32"]
    rtol = max(compute, 2 * MACHINE_EPSILON[name])
    atol = compute * max(float(scale), 1e-30)
    return rtol, atol


def assert_close(actual, expected, dtype=None, scale=None, what=""):
    """Every element of `actual` (stored as `dtype`, default its own) against the float64
    reference `expected`, within tolerance(dtype, scale). `scale` defaults to the largest
    finite |expected|. NaNs must match NaNs."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if dtype is None:
        dtype = actual.dtype
    if scale is None:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = finite.max() if finite.size else 1.0
    rtol, atol = tolerance(dtype, scale)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol,
                               equal_nan=True, err_msg=what)


def backward_magnitudes(dy, data, gamma, mean, invstd, fix_gamma=True, use_global_stats=False,
                        training=True, axis=1):
    """The size of the terms each gradient is summed from: the backward formulas with every
    term replaced by its absolute value, maximized over the array. Rounding errors scale with
    these, not with the result (dx is exactly 0 when M == 1, as the sum of terms that cancel).
    Returns (dx_scale, dgamma_scale, dbeta_scale)."""
    x = _as_float64(data)
    axis = axis % x.ndim
    x_matrix, _ = _channels_last_matrix(x, axis)
    dy_matrix, _ = _channels_last_matrix(np.abs(_as_float64(dy)), axis)
    items_per_channel = max(x_matrix.shape[0], 1)
    g = np.ones(x.shape[axis]) if fix_gamma else np.abs(_as_float64(gamma))
    invstd = np.abs(_as_float64(invstd))
    with np.errstate(invalid="ignore", over="ignore"):
        centered = np.abs(x_matrix - _as_float64(mean))
        sum_dy = dy_matrix.sum(axis=0)
        dot = (centered * dy_matrix).sum(axis=0)
        if training and not use_global_stats:
            dx_terms = (dy_matrix + sum_dy / items_per_channel
                        + centered * invstd ** 2 * dot / items_per_channel) * invstd * g
        else:
            dx_terms = dy_matrix * invstd * g

    def largest(values):
        finite = values[np.isfinite(values)]
        return float(finite.max()) if finite.size else 0.0

    return largest(dx_terms), largest(dot * invstd), largest(sum_dy)


def assert_gradients_close(actual, dy, data, gamma, mean, invstd, fix_gamma=True,
                           use_global_stats=False, training=True, axis=1, initial=None):
    """pybn's (dx, dgamma, dbeta) against backward_reference for the same inputs, each within
    the tolerance of its dtype at the magnitude of its terms. `initial` (a 3-tuple, None
    entries allowed) holds buffer contents a grad_req "add" accumulated onto."""
    flags = dict(fix_gamma=fix_gamma, use_global_stats=use_global_stats, training=training,
                 axis=axis)
    expected = backward_reference(dy, data, gamma, mean, invstd, **flags)
    scales = backward_magnitudes(dy, data, gamma, mean, invstd, **flags)
    initial = initial or (None, None, None)
    for name, value, wanted, scale, start in zip(("dx", "dgamma", "dbeta"), actual, expected,
                                                 scales, initial):
        if value is None:
            continue
        if start is not None:
            start = _as_float64(start)
            wanted = start + wanted
            finite = np.abs(start[np.isfinite(start)])
            scale = scale + (finite.max() if finite.size else 0.0)
        assert_close(value, wanted, scale=max(scale, 1e-300), what=name)
