"""Array adapter: NumPy / CuPy / DLPack / buffer-protocol objects -> specs for pybn._core.

NumPy arrays go to pybn._core as they are; other memory (CUDA arrays) as a spec
``(address, device_type, device_id, dtype_code, dtype_bits, shape, strides)`` with strides in
elements, the field set of pybn_tensor (and DLPack's DLTensor). Nothing here checks what the C
library checks (shapes, dtypes, overlap): this module only finds memory, and copies inputs
whose layout the kernels cannot read directly.
"""
from __future__ import annotations

import numpy as np

from ._core import dtype_fields, host_ascontiguousarray, host_empty_like

DEVICE_CUDA = 2  # DLPack kDLCUDA


def is_device_array(obj) -> bool:
    return hasattr(obj, "__cuda_array_interface__")


def as_array(obj, name: str):
    """Return obj as an array pybn can describe: a NumPy array or a CUDA array (CuPy)."""
    if isinstance(obj, np.ndarray):
        return _native(obj, name)
    if is_device_array(obj):
        return obj
    if hasattr(obj, "__dlpack__"):
        try:
            return np.from_dlpack(obj)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass  # not a host tensor NumPy can view: try the buffer protocol
    try:
        memoryview(obj)
    except TypeError:
        raise TypeError(
            f"{name} must be an array (NumPy, CuPy, or an object with __dlpack__, "
            f"__cuda_array_interface__ or the buffer protocol), got {type(obj).__name__}"
        ) from None
    return _native(np.asarray(obj), name)


def _native(arr, name):
    # pybn_tensor has no byte-order field: a byte-swapped array would be read as garbage.
    if not arr.dtype.isnative:
        raise TypeError(f"{name} has non-native byte order ({arr.dtype.str}); "
                        f"convert it with {name}.astype({name}.dtype.newbyteorder('='))")
    return arr


def array_module(arr):
    """numpy for host arrays, cupy for CUDA arrays (imported only when one shows up)."""
    if is_device_array(arr):
        import cupy

        return cupy
    return np


def stat_dtype(data_dtype):
    """float32 for 16-bit data, else the data's dtype (SPEC "Shapes and types")."""
    return np.dtype(np.float32) if data_dtype.itemsize == 2 else data_dtype


def require_writable(arr, name: str, why: str) -> None:
    flags = getattr(arr, "flags", None)
    if isinstance(arr, np.ndarray) and not flags.writeable:
        raise ValueError(f"{name} must be writable: {why}")


def is_dense(arr) -> bool:
    """True for C order or any permutation of it (size-1 dimensions ignored)."""
    flags = arr.flags
    if flags.c_contiguous or flags.f_contiguous:  # the common case, without a Python loop
        return True
    dims = sorted((stride, size) for size, stride in zip(arr.shape, arr.strides) if size > 1)
    expected = arr.itemsize
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(a, b) -> bool:
    if a.shape != b.shape:
        return False
    return a.strides == b.strides or all(
        sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides) if n > 1
    )


def empty_like(arr, dtype=None):
    """np.empty_like for outputs: host arrays of 4 MiB and more take their memory from the C
    library's cache of large blocks (pybn_host_alloc), which a fresh output would otherwise pay
    for in page faults on every call; CUDA arrays come from their own module."""
    if isinstance(arr, np.ndarray):
        return host_empty_like(arr, dtype)
    return array_module(arr).empty_like(arr, dtype=dtype)


def copy_into_layout(src, template):
    """A copy of src laid out in memory like template (which must be dense)."""
    out = empty_like(template, dtype=src.dtype)
    out[...] = src
    return out


def dense_input(arr, like=None):
    """arr itself if the kernels can read it as is, else a dense copy (like `like`'s layout)."""
    if arr.flags.c_contiguous:  # strides of size-1 dimensions do not matter to the kernels
        return arr
    if is_dense(arr) and all(s % arr.itemsize == 0 for s in arr.strides):
        return arr
    if like is not None and like.shape == arr.shape and is_dense(like):
        return copy_into_layout(arr, like)
    if isinstance(arr, np.ndarray):
        return host_ascontiguousarray(arr)  # a temporary: its block serves the next call's
    return array_module(arr).ascontiguousarray(arr)


def spec(arr):
    """What pybn._core describes: NumPy arrays go as they are (read through the NumPy C API),
    CUDA arrays as a spec tuple built from __cuda_array_interface__; None stays None."""
    if arr is None or isinstance(arr, np.ndarray):
        return arr
    code, bits = dtype_fields(arr.dtype)
    itemsize = arr.itemsize
    interface = arr.__cuda_array_interface__
    # A stride that is not a whole number of elements becomes 0, which the C checks reject.
    strides = tuple([s // itemsize if s % itemsize == 0 else 0 for s in arr.strides])
    return (interface["data"][0], DEVICE_CUDA, int(arr.device.id), code, bits, arr.shape, strides)


def current_stream(arr) -> int:
    """The caller's current CUDA stream for device arrays (CuPy), else 0."""
    if is_device_array(arr):
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)
    return 0
