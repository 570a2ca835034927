"""pybn: MXNet's BatchNorm operator as a native library (C ABI, OpenMP CPU kernels).

Public API (SPEC.md "Python API"): :func:`batch_norm`, :func:`batch_norm_backward`,
:func:`select_backend`, :class:`BatchNorm`, :data:`CUDNN_BN_MIN_EPSILON`, plus
:func:`info`, :func:`get_include` and :func:`get_library` for programs that link the
C library shipped inside this package, and :func:`cpu_scratch_bytes` /
:func:`release_cpu_scratch` for the scratch memory each calling thread keeps.
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
    "cpu_scratch_bytes",
    "get_include",
    "get_library",
    "info",
    "release_cpu_scratch",
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


def cpu_scratch_bytes() -> int:
    """Bytes of scratch memory the calling thread keeps for pybn's CPU kernels.

    Calls cut their scratch arrays (partial sums, coefficients) from a buffer each calling
    thread keeps, rather than allocating: a few KB to a few hundred KB for common shapes, at
    most 4 MB; it is freed when the thread exits or by :func:`release_cpu_scratch`.
    """
    return _core.cpu_scratch_bytes()


def release_cpu_scratch() -> None:
    """Free the calling thread's scratch buffer now (later calls allocate it again)."""
    _core.cpu_release_scratch()


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
