"""A BatchNorm layer: holds gamma, beta and the moving statistics, remembers what its
backward needs, and accumulates parameter gradients (MXNet Gluon's BatchNorm, minus Gluon)."""
from __future__ import annotations

import numpy as np

from ._api import batch_norm, batch_norm_backward
from ._arrays import stat_dtype


class BatchNorm:
    """Batch normalization over ``channels`` channels along ``axis``.

    Parameters are NumPy arrays of the statistic dtype (float32 for 16-bit data):
    ``gamma`` (ones), ``beta`` (zeros), ``moving_mean`` (zeros), ``moving_var`` (ones), and
    the gradients ``grad_gamma`` / ``grad_beta`` that :meth:`backward` accumulates into
    (MXNet's ``grad_req="add"`` for parameters; call :meth:`zero_grad` between steps).

    Example
    -------
    >>> layer = BatchNorm(64, fix_gamma=False)
    >>> y = layer(x, training=True)
    >>> dx = layer.backward(dy)
    """

    def __init__(self, channels, *, axis=1, eps=1e-3, momentum=0.9, fix_gamma=True,
                 use_global_stats=False, dtype="float32"):
        channels = int(channels)
        if channels < 0:
            raise ValueError(f"channels must be >= 0, got {channels}")
        self.channels = channels
        self.axis = axis
        self.eps = eps
        self.momentum = momentum
        self.fix_gamma = fix_gamma
        self.use_global_stats = use_global_stats
        self.dtype = np.dtype(dtype)
        param_dtype = stat_dtype(self.dtype)
        self.gamma = np.ones(channels, dtype=param_dtype)
        self.beta = np.zeros(channels, dtype=param_dtype)
        self.moving_mean = np.zeros(channels, dtype=param_dtype)
        self.moving_var = np.ones(channels, dtype=param_dtype)
        self.grad_gamma = np.zeros(channels, dtype=param_dtype)
        self.grad_beta = np.zeros(channels, dtype=param_dtype)
        self._saved = None

    def forward(self, x, training=True, out=None):
        """Normalize x; in training (without use_global_stats) update the moving statistics.

        With ``out=x`` the input is overwritten, and then :meth:`backward` cannot be used.
        """
        y, mean, invstd = batch_norm(
            x, self.gamma, self.beta, self.moving_mean, self.moving_var, eps=self.eps,
            momentum=self.momentum, fix_gamma=self.fix_gamma,
            use_global_stats=self.use_global_stats, output_mean_var=True, axis=self.axis,
            training=training, out=out)
        self._saved = None if out is x else (x, mean, invstd, bool(training))
        return y

    __call__ = forward

    def backward(self, dy, dx=None):
        """dx for the last forward; grad_gamma and grad_beta accumulate (+=)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward first (and not one done in place)")
        x, mean, invstd, training = self._saved
        dx, _, _ = batch_norm_backward(
            dy, x, self.gamma, mean, invstd, fix_gamma=self.fix_gamma,
            use_global_stats=self.use_global_stats, training=training, axis=self.axis,
            grad_req=("write", "add", "add"), dx=dx, dgamma=self.grad_gamma,
            dbeta=self.grad_beta)
        return dx

    def zero_grad(self):
        self.grad_gamma[...] = 0
        self.grad_beta[...] = 0

    def __repr__(self):
        return (f"BatchNorm({self.channels}, axis={self.axis}, eps={self.eps}, "
                f"momentum={self.momentum}, fix_gamma={self.fix_gamma}, "
                f"use_global_stats={self.use_global_stats}, dtype={self.dtype.name})")
