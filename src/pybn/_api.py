"""pybn's public functions: MXNet's BatchNorm over the C library (SPEC.md "Python API")."""
from __future__ import annotations

import operator

import numpy as np

from . import _core
from ._arrays import (
    array_module,
    as_array,
    copy_into_layout,
    current_stream,
    dense_input,
    empty_like,
    is_dense,
    require_writable,
    same_layout,
    spec,
    stat_dtype,
)

__all__ = ["batch_norm", "batch_norm_backward", "select_backend", "CUDNN_BN_MIN_EPSILON"]

CUDNN_BN_MIN_EPSILON = _core.cudnn_min_epsilon()

_GRAD_REQS = {"write": _core.GRAD_WRITE, "add": _core.GRAD_ADD, "null": _core.GRAD_NULL}


def _as_float(value, name):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None


def _as_axis(axis):
    try:
        return operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None


def _channels(data, axis):
    """C, or 0 when the axis is out of range (the C library then reports the error)."""
    return data.shape[axis] if -data.ndim <= axis < data.ndim else 0


def _parse_grad_req(grad_req):
    if isinstance(grad_req, str):
        reqs = (grad_req,) * 3
    elif isinstance(grad_req, (tuple, list)):
        reqs = tuple(grad_req)
    else:
        raise TypeError("grad_req must be a string or a 3-tuple of strings, "
                        f"got {type(grad_req).__name__}")
    if len(reqs) != 3 or any(not isinstance(r, str) or r not in _GRAD_REQS for r in reqs):
        raise ValueError(
            "grad_req must be 'write', 'add' or 'null', or a 3-tuple of them for "
            f"(data, gamma, beta); got {grad_req!r}"
        )
    return reqs


def batch_norm(data, gamma, beta, moving_mean, moving_var, *, eps=1e-3, momentum=0.9,
               fix_gamma=True, use_global_stats=False, output_mean_var=False, axis=1,
               cudnn_off=False, training=True, out=None):
    """Batch normalization forward, MXNet's ``BatchNorm`` operator.

    Parameters
    ----------
    data : array
        Input of ndim >= 1, float16, bfloat16, float32 or float64, any dense layout
        (C order, channels_last, any transpose) read without a copy.
    gamma, beta, moving_mean, moving_var : array, shape (C,)
        float32 for 16-bit data, else data's dtype. ``moving_mean`` and ``moving_var`` are
        updated in place when training without ``use_global_stats``; ``gamma`` is set to 1
        in place when ``fix_gamma``.
    eps : float
        Added to the variance; finite, >= 0.
    momentum : float
        ``moving = moving * momentum + batch * (1 - momentum)``; in [0, 1].
    fix_gamma : bool
        Take gamma as 1 (and write 1 into it).
    use_global_stats : bool
        Normalize with the moving statistics even while training.
    output_mean_var : bool
        Also return the mean and the inverse standard deviation used.
    axis : int
        The channel axis; negative counts from the end.
    cudnn_off : bool
        Never pick the cuDNN backend.
    training : bool
        MXNet's ``is_train``.
    out : array, optional
        Where to write y: data's shape and dtype, dense. ``out=data`` normalizes in place.
        Giving a preallocated ``out`` (in data's memory layout) is the fast path: a fresh
        output costs page faults that can exceed the normalization itself.

    Returns
    -------
    y, or (y, mean, invstd) when ``output_mean_var``.
    """
    eps = _as_float(eps, "eps")
    momentum = _as_float(momentum, "momentum")
    axis = _as_axis(axis)
    batch_stats = bool(training) and not use_global_stats
    plain = _core.plain_forward(data, out, gamma, beta, moving_mean, moving_var, fix_gamma,
                                batch_stats)
    if plain:
        # The common NumPy call: every check of the branch below holds, nothing to adapt
        # (~2 us less per call, which shows on small tensors).
        x, y, xp = data, _core.host_empty_like(data) if out is None else out, np
    else:
        x = as_array(data, "data")
        gamma = as_array(gamma, "gamma")
        beta = as_array(beta, "beta")
        moving_mean = as_array(moving_mean, "moving_mean")
        moving_var = as_array(moving_var, "moving_var")
        if fix_gamma:
            require_writable(gamma, "gamma", "fix_gamma=True sets it to 1 in place")
        if batch_stats:
            require_writable(moving_mean, "moving_mean", "training updates it in place")
            require_writable(moving_var, "moving_var", "training updates it in place")

        y = None if out is None else as_array(out, "out")
        if y is not None:
            require_writable(y, "out", "the result is written into it")
        x = dense_input(x, like=y)
        xp = array_module(x)
        if y is None:
            y = empty_like(x)
        elif y is not x and is_dense(y) and y.shape == x.shape and not same_layout(x, y):
            x = copy_into_layout(x, y)  # slow path: out's layout differs from data's

    mean = invstd = None
    if output_mean_var:
        channels, dtype = _channels(x, axis), stat_dtype(x.dtype)
        mean, invstd = xp.empty(channels, dtype=dtype), xp.empty(channels, dtype=dtype)

    a = (x, gamma, beta, moving_mean, moving_var, y, mean, invstd)
    if not plain:
        a = tuple(map(spec, a))
    # Positional arguments, in _core.forward's order (eps, momentum, fix_gamma,
    # use_global_stats, output_mean_var, axis, cudnn_off, training, stream): keywords, or a
    # *-call, cost more to parse than the call of a small tensor itself.
    _core.forward(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], eps, momentum, fix_gamma,
                  use_global_stats, output_mean_var, axis, cudnn_off, training,
                  0 if plain else current_stream(x))
    return (y, mean, invstd) if output_mean_var else y


def batch_norm_backward(dy, data, gamma, mean, invstd, *, fix_gamma=True,
                        use_global_stats=False, training=True, axis=1, cudnn_off=False,
                        grad_req="write", dx=None, dgamma=None, dbeta=None):
    """Gradients of :func:`batch_norm` with respect to data, gamma and beta.

    Parameters
    ----------
    dy : array
        Gradient of y: data's shape and dtype.
    data, gamma : array
        As given to the forward.
    mean, invstd : array, shape (C,)
        The statistics the forward used (``output_mean_var=True``).
    fix_gamma, use_global_stats, training, axis, cudnn_off :
        As given to the forward.
    grad_req : {"write", "add", "null"} or a 3-tuple of them
        Request for (data, gamma, beta): overwrite, accumulate into the given buffer
        (MXNet's ``kAddTo``), or skip.
    dx, dgamma, dbeta : array, optional
        Output buffers; required for "add", allocated for "write" when not given.

    Returns
    -------
    (dx, dgamma, dbeta), with None for each "null" request.
    """
    axis = _as_axis(axis)
    plain = (isinstance(grad_req, str) and grad_req == "write"
             and _core.plain_backward(dy, data, gamma, mean, invstd, dx, dgamma, dbeta)
             and -data.ndim <= axis < data.ndim)
    if plain:
        # The common NumPy call (see batch_norm).
        reqs = ("write", "write", "write")
        x, xp = data, np
        dx_arr, dgamma_arr, dbeta_arr = dx, dgamma, dbeta
    else:
        reqs = _parse_grad_req(grad_req)
        x = as_array(data, "data")
        dy = as_array(dy, "dy")
        gamma = as_array(gamma, "gamma")
        mean = as_array(mean, "mean")
        invstd = as_array(invstd, "invstd")

        given = {}
        for name, buffer, req in (("dx", dx, reqs[0]), ("dgamma", dgamma, reqs[1]),
                                  ("dbeta", dbeta, reqs[2])):
            if req == "null":
                given[name] = None
                continue
            if buffer is None:
                if req == "add":
                    raise ValueError(f"{name} must be given when its grad_req is 'add'")
                given[name] = None
                continue
            given[name] = as_array(buffer, name)
            require_writable(given[name], name, "the gradient is written into it")

        dx_arr, dgamma_arr, dbeta_arr = given["dx"], given["dgamma"], given["dbeta"]
        x = dense_input(x, like=dx_arr)
        if (dx_arr is not None and is_dense(dx_arr) and dx_arr.shape == x.shape
                and not same_layout(x, dx_arr)):
            x = copy_into_layout(x, dx_arr)  # slow path: dx's layout differs from data's
        if dy.shape == x.shape and not same_layout(dy, x):
            dy = copy_into_layout(dy, x)
        xp = array_module(x)

    channels = _channels(x, axis)
    if reqs[0] == "write" and dx_arr is None:
        dx_arr = empty_like(x)
    if reqs[1] == "write" and dgamma_arr is None:
        dgamma_arr = xp.empty(channels, dtype=stat_dtype(x.dtype))
    if reqs[2] == "write" and dbeta_arr is None:
        dbeta_arr = xp.empty(channels, dtype=stat_dtype(x.dtype))

    a = (dy, x, gamma, mean, invstd, dx_arr, dgamma_arr, dbeta_arr)
    if not plain:
        a = tuple(map(spec, a))
    # Positional arguments (see batch_norm): fix_gamma, use_global_stats, training, axis,
    # cudnn_off, the three requests, stream.
    _core.backward(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], fix_gamma, use_global_stats,
                   training, axis, cudnn_off, _GRAD_REQS[reqs[0]], _GRAD_REQS[reqs[1]],
                   _GRAD_REQS[reqs[2]], 0 if plain else current_stream(x))
    return dx_arr, dgamma_arr, dbeta_arr


def select_backend(data, *, axis=1, cudnn_off=False):
    """The backend ("cpu", "cuda" or "cudnn") that batch_norm would run for this data."""
    x = as_array(data, "data")
    return _core.select_backend(spec(x), _as_axis(axis), bool(cudnn_off))
