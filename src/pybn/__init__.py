"""pybn: MXNet's BatchNorm operator as a native library (C ABI, OpenMP CPU kernels).

Public API (SPEC.md "Python API"): :func:`batch_norm`, :func:`batch_norm_backward`,
:func:`select_backend`, :class:`BatchNorm`, :data:`CUDNN_BN_MIN_EPSILON`, plus
:func:`info`, :func:`get_include` and :func:`get_library` for programs that link the
C library shipped inside this package.
"""
from __future__ import annotations

import os

from . import _core
from ._api import CUDNN_BN_MIN_EPSILON, batch_norm, batch_norm_backward, select_backend
from .layer import BatchNorm

__version__ = _core.library_version()

__all__ = [
    "BatchNorm",
    "CUDNN_BN_MIN_EPSILON",
    "batch_norm",
    "batch_norm_backward",
    "get_include",
    "get_library",
    "info",
    "select_backend",
]

_HERE = os.path.dirname(os.path.abspath(__file__))

if _core.library_abi_version() != _core.HEADER_ABI_VERSION:  # a stale libpybn next to us
    raise ImportError(
        f"pybn: libpybn ABI {_core.library_abi_version()} does not match the header's "
        f"{_core.HEADER_ABI_VERSION}; reinstall pybn")


def get_include() -> str:
    """The directory holding ``pybn/pybn.h`` (pass it to the compiler with -I)."""
    return os.path.join(_HERE, "include")


def get_library() -> str:
    """The path of the shared C library libpybn inside this package (link it directly)."""
    for name in os.listdir(_HERE):
        if name.startswith("libpybn") and (".so" in name or name.endswith(".dylib")):
            return os.path.join(_HERE, name)
        if name == "pybn.dll":
            return os.path.join(_HERE, name)
    raise FileNotFoundError(f"libpybn not found in {_HERE}")


def info() -> dict:
    """What this pybn is: version, backends built and available, CPU threads and SIMD path."""
    return {
        "version": __version__,
        "abi_version": _core.library_abi_version(),
        "backends": {name: {"built": built, "available": available}
                     for name, (built, available) in _core.backends().items()},
        "omp_threads": _core.cpu_num_threads(),
        "cpu_isa": _core.cpu_isa(),
        "cudnn_min_epsilon": CUDNN_BN_MIN_EPSILON,
        "library": get_library(),
        "include": get_include(),
    }
