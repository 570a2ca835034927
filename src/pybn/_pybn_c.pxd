# Cython view of cpp/include/pybn/pybn.h, one to one. Keep the two in step.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t

cdef extern from "pybn/pybn.h" nogil:
    int PYBN_VERSION
    int PYBN_ABI_VERSION

    ctypedef enum pybn_status:
        PYBN_SUCCESS
        PYBN_ERROR_INVALID_VALUE
        PYBN_ERROR_INVALID_TYPE
        PYBN_ERROR_NOT_SUPPORTED
        PYBN_ERROR_DEVICE
        PYBN_ERROR_OUT_OF_MEMORY
        PYBN_ERROR_INTERNAL

    ctypedef enum pybn_device_type:
        PYBN_DEVICE_CPU
        PYBN_DEVICE_CUDA
        PYBN_DEVICE_CUDA_HOST
        PYBN_DEVICE_CUDA_MANAGED

    ctypedef struct pybn_device:
        int32_t device_type
        int32_t device_id

    ctypedef enum pybn_dtype_code:
        PYBN_DTYPE_FLOAT
        PYBN_DTYPE_BFLOAT

    ctypedef struct pybn_dtype:
        uint8_t code
        uint8_t bits
        uint16_t lanes

    ctypedef struct pybn_tensor:
        void *data
        pybn_device device
        int32_t ndim
        pybn_dtype dtype
        const int64_t *shape
        const int64_t *strides
        uint64_t byte_offset

    ctypedef enum pybn_backend:
        PYBN_BACKEND_AUTO
        PYBN_BACKEND_CPU
        PYBN_BACKEND_CUDA
        PYBN_BACKEND_CUDNN

    ctypedef enum pybn_grad_req:
        PYBN_GRAD_WRITE
        PYBN_GRAD_ADD
        PYBN_GRAD_NULL

    ctypedef struct pybn_params:
        double eps
        double momentum
        int32_t fix_gamma
        int32_t use_global_stats
        int32_t output_mean_var
        int32_t axis
        int32_t cudnn_off
        int32_t training
        int32_t grad_req_data
        int32_t grad_req_gamma
        int32_t grad_req_beta
        int32_t backend
        void *stream

    int pybn_version()
    int pybn_abi_version()
    const char *pybn_version_string()
    const char *pybn_status_string(pybn_status status)
    const char *pybn_last_error()
    void pybn_params_default(pybn_params *params)

    const char *pybn_backend_name(pybn_backend backend)
    int pybn_backend_built(pybn_backend backend)
    int pybn_backend_available(pybn_backend backend)
    pybn_status pybn_select_backend(const pybn_params *params, const pybn_tensor *data,
                                    pybn_backend *backend)
    pybn_status pybn_cudnn_min_epsilon(double *eps)
    int pybn_cpu_num_threads()
    pybn_status pybn_cpu_set_num_threads(int threads)
    const char *pybn_cpu_isa()
    size_t pybn_cpu_scratch_bytes()
    void pybn_cpu_release_scratch()

    size_t PYBN_HOST_CACHE_MIN_BYTES
    pybn_status pybn_host_alloc(size_t bytes, void **ptr)
    pybn_status pybn_host_realloc(void *ptr, size_t bytes, void **new_ptr)
    void pybn_host_free(void *ptr)
    size_t pybn_host_cache_bytes()
    size_t pybn_host_cache_limit()
    void pybn_host_cache_set_limit(size_t bytes)
    void pybn_host_cache_release()

    pybn_status pybn_forward(const pybn_params *params, const pybn_tensor *data,
                             const pybn_tensor *gamma, const pybn_tensor *beta,
                             const pybn_tensor *moving_mean, const pybn_tensor *moving_var,
                             const pybn_tensor *y, const pybn_tensor *mean,
                             const pybn_tensor *invstd)
    pybn_status pybn_backward(const pybn_params *params, const pybn_tensor *dy,
                              const pybn_tensor *data, const pybn_tensor *gamma,
                              const pybn_tensor *mean, const pybn_tensor *invstd,
                              const pybn_tensor *dx, const pybn_tensor *dgamma,
                              const pybn_tensor *dbeta)
