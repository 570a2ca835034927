# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding of pybn's C ABI (cpp/include/pybn/pybn.h).

It only fills C structs, releases the GIL around the call and turns a status into an
exception (plain_forward / plain_backward: the checks of pybn/_api.py's NumPy fast path, in C).
Arrays arrive from pybn/_arrays.py either as NumPy arrays, read here through the NumPy C API
(tens of nanoseconds per array), or as *specs* for other memory (CUDA arrays):
``(address, device_type, device_id, dtype_code, dtype_bits, shape, strides_in_elements)``;
None stands for an absent optional tensor.
"""
from libc.stdint cimport int64_t, uint8_t, uintptr_t
from libc.string cimport memset, strcpy
from cpython.ref cimport Py_INCREF

import numpy as np

cimport numpy as cnp

from ._pybn_c cimport *

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    enum: NPY_HALF  # not in every NumPy's numpy/__init__.pxd

cdef enum:
    MAX_DIMS = 64  # NumPy's own limit

cdef struct TensorSlot:
    pybn_tensor tensor
    int64_t shape[MAX_DIMS]
    int64_t strides[MAX_DIMS]


# DLPack type codes by NumPy dtype kind; bfloat16 (ml_dtypes) is recognised by name.
_DLPACK_CODES = {"i": 0, "u": 1, "f": PYBN_DTYPE_FLOAT, "c": 5, "b": 6}
_UNKNOWN_CODE = 255
cdef dict _dtype_fields_cache = {}


def dtype_fields(dtype):
    """(DLPack type code, bits) of a NumPy dtype, as pybn_dtype wants them (cached)."""
    fields = _dtype_fields_cache.get(dtype)
    if fields is None:
        if dtype.name == "bfloat16":
            fields = (PYBN_DTYPE_BFLOAT, 16)
        else:
            fields = (_DLPACK_CODES.get(dtype.kind, _UNKNOWN_CODE), dtype.itemsize * 8)
        _dtype_fields_cache[dtype] = fields
    return fields


cdef void fill_strides(TensorSlot *slot, int ndim, int64_t itemsize, const cnp.npy_intp *byte_strides):
    # A stride that is not a whole number of elements cannot be described: it becomes 0, which
    # the C checks reject for outputs (inputs with such strides were copied by _arrays.py).
    cdef int d
    for d in range(ndim):
        slot.strides[d] = byte_strides[d] // itemsize if byte_strides[d] % itemsize == 0 else 0


cdef inline bint builtin_float_fields(cnp.ndarray arr, int *code, int *bits) noexcept:
    """The DLPack (code, bits) of NumPy's own float types, from the type number: a C switch
    where dtype_fields costs an attribute access and a dict lookup per array."""
    cdef int type_num = cnp.PyArray_TYPE(arr)
    code[0] = PYBN_DTYPE_FLOAT
    if type_num == cnp.NPY_FLOAT:
        bits[0] = 32
    elif type_num == cnp.NPY_DOUBLE:
        bits[0] = 64
    elif type_num == NPY_HALF:
        bits[0] = 16
    else:
        return False
    return True


cdef const pybn_tensor *fill(TensorSlot *slot, object array_or_spec, str name) except? NULL:
    """Describe a NumPy array or a spec in slot; NULL for None (an absent tensor)."""
    if array_or_spec is None:
        return NULL
    cdef int ndim, d, code, bits
    cdef cnp.ndarray arr
    if isinstance(array_or_spec, cnp.ndarray):
        arr = <cnp.ndarray>array_or_spec
        ndim = cnp.PyArray_NDIM(arr)
        if ndim > MAX_DIMS:
            raise ValueError(f"{name} has {ndim} dimensions; pybn supports at most {MAX_DIMS}")
        if not builtin_float_fields(arr, &code, &bits):
            code, bits = dtype_fields(arr.dtype)
        slot.tensor.data = cnp.PyArray_DATA(arr)
        slot.tensor.device.device_type = PYBN_DEVICE_CPU
        slot.tensor.device.device_id = 0
        for d in range(ndim):
            slot.shape[d] = cnp.PyArray_DIMS(arr)[d]
        fill_strides(slot, ndim, cnp.PyArray_ITEMSIZE(arr), cnp.PyArray_STRIDES(arr))
    else:
        address, device_type, device_id, code, bits, shape, strides = array_or_spec
        ndim = len(shape)
        if ndim > MAX_DIMS:
            raise ValueError(f"{name} has {ndim} dimensions; pybn supports at most {MAX_DIMS}")
        slot.tensor.data = <void *><uintptr_t>address
        slot.tensor.device.device_type = device_type
        slot.tensor.device.device_id = device_id
        for d in range(ndim):
            slot.shape[d] = shape[d]
            slot.strides[d] = strides[d]
    slot.tensor.ndim = ndim
    slot.tensor.dtype.code = code
    slot.tensor.dtype.bits = bits
    slot.tensor.dtype.lanes = 1
    slot.tensor.byte_offset = 0
    slot.tensor.shape = slot.shape
    slot.tensor.strides = slot.strides
    return &slot.tensor


cdef int check(pybn_status status) except -1:
    """Map a status to the exception SPEC.md "Errors" asks for, with the library's message."""
    if status == PYBN_SUCCESS:
        return 0
    message = pybn_last_error().decode("utf-8", "replace") or pybn_status_string(status).decode()
    if status == PYBN_ERROR_INVALID_VALUE:
        raise ValueError(message)
    if status == PYBN_ERROR_INVALID_TYPE:
        raise TypeError(message)
    if status == PYBN_ERROR_OUT_OF_MEMORY:
        raise MemoryError(message)
    raise RuntimeError(message)


_BACKENDS = {"cpu": PYBN_BACKEND_CPU, "cuda": PYBN_BACKEND_CUDA, "cudnn": PYBN_BACKEND_CUDNN}

GRAD_WRITE = PYBN_GRAD_WRITE
GRAD_ADD = PYBN_GRAD_ADD
GRAD_NULL = PYBN_GRAD_NULL
HEADER_VERSION = PYBN_VERSION
HEADER_ABI_VERSION = PYBN_ABI_VERSION


def library_version():
    return pybn_version_string().decode()


def library_abi_version():
    return pybn_abi_version()


def backends():
    """{name: (built, available)} for every backend of the C ABI."""
    return {name: (bool(pybn_backend_built(code)), bool(pybn_backend_available(code)))
            for name, code in _BACKENDS.items()}


def cpu_num_threads():
    return pybn_cpu_num_threads()


def cpu_set_num_threads(int threads):
    check(pybn_cpu_set_num_threads(threads))


def cpu_isa():
    return pybn_cpu_isa().decode()


def cpu_scratch_bytes():
    return pybn_cpu_scratch_bytes()


def cpu_release_scratch():
    pybn_cpu_release_scratch()


# ---- NumPy outputs in pybn's host memory -------------------------------------------------------
# Large outputs are allocated by NumPy itself (PyArray_NewLikeArray: np.empty_like's layout
# rules, an array that owns its data) but through a NumPy memory handler (NEP 49) whose
# functions are pybn_host_alloc and friends, so that their blocks come from and go back to the
# C library's cache (pybn.h, "host memory for outputs"). The handler is installed only around
# that one allocation; the array keeps it for its free.

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                cnp.PyArray_Descr *descr, int subok)

cdef extern from "Python.h":
    object PyCapsule_New(void *pointer, const char *name, void *destructor)


cdef void *host_malloc(void *ctx, size_t size) noexcept nogil:
    cdef void *p = NULL
    pybn_host_alloc(size, &p)
    return p


cdef void *host_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef void *p = NULL
    if elsize != 0 and nelem > (<size_t>-1) // elsize:
        return NULL
    if pybn_host_alloc(nelem * elsize, &p) == PYBN_SUCCESS:
        memset(p, 0, nelem * elsize)
    return p


cdef void *host_realloc(void *ctx, void *ptr, size_t new_size) noexcept nogil:
    cdef void *p = NULL
    pybn_host_realloc(ptr, new_size, &p)
    return p


cdef void host_free(void *ctx, void *ptr, size_t size) noexcept nogil:
    pybn_host_free(ptr)


cdef PyDataMem_Handler host_handler
strcpy(host_handler.name, b"pybn_host")  # the name NumPy's get_handler_name reports
host_handler.version = 1
host_handler.allocator.ctx = NULL
host_handler.allocator.malloc = host_malloc
host_handler.allocator.calloc = host_calloc
host_handler.allocator.realloc = host_realloc
host_handler.allocator.free = host_free
# NumPy looks the handler up by this capsule name; the struct lives as long as the module, which
# is never unloaded.
cdef object host_handler_capsule = PyCapsule_New(&host_handler, "mem_handler", NULL)
HOST_CACHE_MIN_BYTES = PYBN_HOST_CACHE_MIN_BYTES


cdef object new_like(cnp.ndarray prototype, cnp.dtype descr, cnp.NPY_ORDER order, int subok):
    """PyArray_NewLikeArray, through the host handler for arrays of at least
    PYBN_HOST_CACHE_MIN_BYTES (NumPy's own allocator below that)."""
    cdef Py_ssize_t nbytes = cnp.PyArray_SIZE(prototype) * descr.itemsize
    Py_INCREF(descr)  # PyArray_NewLikeArray steals a reference to the descriptor
    if nbytes < <Py_ssize_t>PYBN_HOST_CACHE_MIN_BYTES:
        return PyArray_NewLikeArray(prototype, order, <cnp.PyArray_Descr *>descr, subok)
    previous = PyDataMem_SetHandler(host_handler_capsule)
    try:
        return PyArray_NewLikeArray(prototype, order, <cnp.PyArray_Descr *>descr, subok)
    finally:
        PyDataMem_SetHandler(previous)


def host_empty_like(cnp.ndarray prototype, dtype=None):
    """np.empty_like(prototype, dtype): the same type, shape and layout rules; memory from
    pybn's host cache when large."""
    return new_like(prototype, prototype.dtype if dtype is None else np.dtype(dtype),
                    cnp.NPY_KEEPORDER, 1)


def host_ascontiguousarray(cnp.ndarray arr):
    """np.ascontiguousarray(arr) for an array that is not C-contiguous: a C-order copy, a plain
    ndarray; memory from pybn's host cache when large."""
    out = new_like(arr, arr.dtype, cnp.NPY_CORDER, 0)
    out[...] = arr
    return out


def host_cache_bytes():
    return pybn_host_cache_bytes()


def host_cache_limit():
    return pybn_host_cache_limit()


def host_cache_set_limit(size_t limit):
    pybn_host_cache_set_limit(limit)


def host_cache_release():
    pybn_host_cache_release()


def cudnn_min_epsilon():
    """The cuDNN epsilon floor pybn was built with, or None without cuDNN."""
    cdef double eps = 0
    if pybn_cudnn_min_epsilon(&eps) != PYBN_SUCCESS:
        return None
    return eps


def select_backend(data, int axis, bint cudnn_off):
    cdef TensorSlot slot
    cdef pybn_params params
    cdef pybn_backend chosen = PYBN_BACKEND_AUTO
    pybn_params_default(&params)
    params.axis = axis
    params.cudnn_off = cudnn_off
    cdef const pybn_tensor *t = fill(&slot, data, "data")
    check(pybn_select_backend(&params, t, &chosen))
    return pybn_backend_name(chosen).decode()


cdef inline bint plain_array(object obj, bint written) noexcept:
    """A NumPy ndarray (not a subclass) in native byte order, writable if `written`."""
    if not cnp.PyArray_CheckExact(obj):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>obj
    return cnp.PyArray_ISNOTSWAPPED(arr) and (not written or cnp.PyArray_ISWRITEABLE(arr))


cdef inline bint plain_dense(object obj, bint written) noexcept:
    """plain_array, and C-contiguous."""
    return plain_array(obj, written) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>obj)


def plain_forward(data, out, gamma, beta, moving_mean, moving_var, bint gamma_written,
                  bint moving_written):
    """True when forward() can take these NumPy arrays as they are (pybn/_api.py's fast
    path): ndarrays in native byte order, data and out (None: allocated) C-contiguous, and
    the arrays written to writable. Checked with the NumPy C macros: a few nanoseconds, where
    the same test in Python took ~0.6 us per call."""
    return (plain_dense(data, False) and (out is None or plain_dense(out, True))
            and plain_array(gamma, gamma_written) and plain_array(beta, False)
            and plain_array(moving_mean, moving_written) and plain_array(moving_var, moving_written))


def plain_backward(dy, data, gamma, mean, invstd, dx, dgamma, dbeta):
    """plain_forward for backward(): dy and data (and dx unless None) C-contiguous, the given
    outputs writable."""
    return (plain_dense(dy, False) and plain_dense(data, False)
            and plain_array(gamma, False) and plain_array(mean, False) and plain_array(invstd, False)
            and (dx is None or plain_dense(dx, True))
            and (dgamma is None or plain_array(dgamma, True))
            and (dbeta is None or plain_array(dbeta, True)))


def forward(data, gamma, beta, moving_mean, moving_var, y, mean, invstd,
            double eps, double momentum, bint fix_gamma, bint use_global_stats,
            bint output_mean_var, int axis, bint cudnn_off, bint training, uintptr_t stream=0):
    cdef TensorSlot slots[8]
    cdef pybn_params params
    pybn_params_default(&params)
    params.eps = eps
    params.momentum = momentum
    params.fix_gamma = fix_gamma
    params.use_global_stats = use_global_stats
    params.output_mean_var = output_mean_var
    params.axis = axis
    params.cudnn_off = cudnn_off
    params.training = training
    params.stream = <void *>stream
    cdef const pybn_tensor *t_data = fill(&slots[0], data, "data")
    cdef const pybn_tensor *t_gamma = fill(&slots[1], gamma, "gamma")
    cdef const pybn_tensor *t_beta = fill(&slots[2], beta, "beta")
    cdef const pybn_tensor *t_moving_mean = fill(&slots[3], moving_mean, "moving_mean")
    cdef const pybn_tensor *t_moving_var = fill(&slots[4], moving_var, "moving_var")
    cdef const pybn_tensor *t_y = fill(&slots[5], y, "out")
    cdef const pybn_tensor *t_mean = fill(&slots[6], mean, "mean")
    cdef const pybn_tensor *t_invstd = fill(&slots[7], invstd, "invstd")
    cdef pybn_status status
    with nogil:
        status = pybn_forward(&params, t_data, t_gamma, t_beta, t_moving_mean, t_moving_var,
                              t_y, t_mean, t_invstd)
    check(status)


def backward(dy, data, gamma, mean, invstd, dx, dgamma, dbeta,
             bint fix_gamma, bint use_global_stats, bint training, int axis, bint cudnn_off,
             int req_data, int req_gamma, int req_beta, uintptr_t stream=0):
    cdef TensorSlot slots[8]
    cdef pybn_params params
    pybn_params_default(&params)
    params.fix_gamma = fix_gamma
    params.use_global_stats = use_global_stats
    params.training = training
    params.axis = axis
    params.cudnn_off = cudnn_off
    params.grad_req_data = req_data
    params.grad_req_gamma = req_gamma
    params.grad_req_beta = req_beta
    params.stream = <void *>stream
    cdef const pybn_tensor *t_dy = fill(&slots[0], dy, "dy")
    cdef const pybn_tensor *t_data = fill(&slots[1], data, "data")
    cdef const pybn_tensor *t_gamma = fill(&slots[2], gamma, "gamma")
    cdef const pybn_tensor *t_mean = fill(&slots[3], mean, "mean")
    cdef const pybn_tensor *t_invstd = fill(&slots[4], invstd, "invstd")
    cdef const pybn_tensor *t_dx = fill(&slots[5], dx, "dx")
    cdef const pybn_tensor *t_dgamma = fill(&slots[6], dgamma, "dgamma")
    cdef const pybn_tensor *t_dbeta = fill(&slots[7], dbeta, "dbeta")
    cdef pybn_status status
    with nogil:
        status = pybn_backward(&params, t_dy, t_data, t_gamma, t_mean, t_invstd,
                               t_dx, t_dgamma, t_dbeta)
    check(status)
