"""pybn: MXNet's BatchNorm operator as a native library (C ABI, OpenMP CPU kernels).

Public API (SPEC.md "Python API"): :func:`batch_norm`, :func:`batch_norm_backward`,
:func:`select_backend`, :class:`BatchNorm`, :data:`CUDNN_BN_MIN_EPSILON`, plus
:func:`info`, :func:`get_include` and :func:`get_library` for programs that link the
C library shipped inside this package, :func:`get_num_threads` / :func:`set_num_threads` for
the CPU backend's threads, :func:`cpu_scratch_bytes` /
:func:`release_cpu_scratch` for the scratch memory each calling thread keeps, and
:func:`host_cache_bytes`, :func:`host_cache_limit`, :func:`set_host_cache_limit` and
:func:`release_host_cache` for the cache of large output blocks.
"""
from __future__ import annotations

import operator
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
    "get_num_threads",
    "host_cache_bytes",
    "host_cache_limit",
    "info",
    "release_cpu_scratch",
    "release_host_cache",
    "select_backend",
    "set_host_cache_limit",
    "set_num_threads",
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


def get_num_threads() -> int:
    """Threads the CPU backend's calls use, at most: the count :func:`set_num_threads` set,
    else OpenMP's maximum (``OMP_NUM_THREADS``); 1 in a child of ``fork()``. A call under 16K
    elements uses one, a larger one a thread per 16K elements (at least two)."""
    return _core.cpu_num_threads()


def set_num_threads(threads: int) -> None:
    """Set the CPU backend's threads for every thread of this process; 0 goes back to
    OpenMP's maximum. Other OpenMP libraries keep their own setting.

    Results are the same bits for any count. Fewer threads than cores pay off where other
    work keeps the cores busy: a call's team waits for each of its threads to be scheduled
    (README, "Threads").
    """
    threads = operator.index(threads)
    if threads < 0:
        raise ValueError(f"threads must be >= 1, or 0 for OpenMP's maximum; got {threads}")
    if threads > 2**31 - 1:
        raise ValueError(f"threads must fit in a C int; got {threads}")
    _core.cpu_set_num_threads(threads)


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


def host_cache_bytes() -> int:
    """Bytes of idle memory pybn keeps for large outputs.

    Outputs pybn allocates (``out=None``, ``dx=None``) of 4 MiB and more, and the copies it
    makes of inputs the kernels cannot read as they are, come from the C library's host
    memory (``pybn_host_alloc``): when such an array is freed its block is kept, pages mapped,
    for the next array of the same size class (2 MiB steps), which then skips the page faults
    a fresh block costs (they can take longer than the normalization).
    Idle blocks beyond :func:`host_cache_limit` are freed, the longest idle first.
    """
    return _core.host_cache_bytes()


def host_cache_limit() -> int:
    """The most idle bytes the output cache keeps: ``PYBN_HOST_CACHE_MB`` MiB from the
    environment when set, else 1 GiB, or what :func:`set_host_cache_limit` set."""
    return _core.host_cache_limit()


def set_host_cache_limit(nbytes: int) -> None:
    """Set the output cache's limit on idle bytes, freeing idle blocks above it now; 0 turns
    the cache off."""
    nbytes = operator.index(nbytes)
    if nbytes < 0:
        raise ValueError(f"the host cache limit must be >= 0 bytes, got {nbytes}")
    _core.host_cache_set_limit(nbytes)


def release_host_cache() -> None:
    """Free every idle block of the output cache now (the limit stays)."""
    _core.host_cache_release()


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
        "host_cache_bytes": host_cache_bytes(),
        "host_cache_limit": host_cache_limit(),
        "library": get_library(),
        "include": get_include(),
    }
