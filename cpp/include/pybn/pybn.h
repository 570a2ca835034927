/*
 * pybn: MXNet's BatchNorm operator as a native library, behind a plain C ABI.
 *
 * This header is the whole public interface. It compiles as strict C99 and as C++.
 * Conventions (after nccl.h, dlpack.h and cudnn):
 *   - every entry point returns a pybn_status; pybn_status_string() names it and
 *     pybn_last_error() gives the specific message of the calling thread's last failure;
 *   - every argument is checked before anything is written: on error no buffer changes;
 *   - memory is owned by the caller; tensors are described by pybn_tensor, whose fields
 *     follow DLPack's DLTensor one for one (strides are in elements, NULL means C order);
 *   - no C++ exception ever leaves the library and nothing aborts.
 * The formulas are those of SPEC.md (MXNet's BatchNorm): see README.md.
 */
#ifndef PYBN_PYBN_H_
#define PYBN_PYBN_H_

#include <stddef.h>
#include <stdint.h>

#define PYBN_VERSION_MAJOR 0
#define PYBN_VERSION_MINOR 1
#define PYBN_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, as returned by pybn_version(). */
#define PYBN_VERSION (PYBN_VERSION_MAJOR * 10000 + PYBN_VERSION_MINOR * 100 + PYBN_VERSION_PATCH)
/* Bumped whenever a struct layout or an entry point's meaning changes. A program should
 * check pybn_abi_version() == PYBN_ABI_VERSION at start-up. */
#define PYBN_ABI_VERSION 1

#if defined(_WIN32)
#  if defined(PYBN_BUILDING_LIBRARY)
#    define PYBN_API __declspec(dllexport)
#  else
#    define PYBN_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define PYBN_API __attribute__((visibility("default")))
#else
#  define PYBN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pybn_status {
  PYBN_SUCCESS = 0,
  PYBN_ERROR_INVALID_VALUE = 1,  /* bad shape, axis, eps, momentum, overlap, device mismatch */
  PYBN_ERROR_INVALID_TYPE = 2,   /* unsupported dtype, or dtypes that do not match */
  PYBN_ERROR_NOT_SUPPORTED = 3,  /* a valid request this build cannot serve (backend not built) */
  PYBN_ERROR_DEVICE = 4,         /* CUDA / cuDNN failure; the message carries theirs */
  PYBN_ERROR_OUT_OF_MEMORY = 5,  /* an internal scratch allocation failed */
  PYBN_ERROR_INTERNAL = 6        /* a bug in pybn: please report it with the message */
} pybn_status;

/* Device types use DLPack's DLDeviceType codes, so a DLTensor maps field by field. */
typedef enum pybn_device_type {
  PYBN_DEVICE_CPU = 1,
  PYBN_DEVICE_CUDA = 2,
  PYBN_DEVICE_CUDA_HOST = 3,     /* pinned host memory: treated as CPU memory */
  PYBN_DEVICE_CUDA_MANAGED = 13
} pybn_device_type;

typedef struct pybn_device {
  int32_t device_type;           /* a pybn_device_type */
  int32_t device_id;
} pybn_device;

/* Data type codes are DLPack's DLDataTypeCode values. */
typedef enum pybn_dtype_code {
  PYBN_DTYPE_FLOAT = 2,          /* bits 16 (IEEE half), 32 or 64 */
  PYBN_DTYPE_BFLOAT = 4          /* bits 16 */
} pybn_dtype_code;

typedef struct pybn_dtype {
  uint8_t code;                  /* a pybn_dtype_code */
  uint8_t bits;
  uint16_t lanes;                /* must be 1 */
} pybn_dtype;

/* A strided view of caller-owned memory, laid out like DLPack's DLTensor. */
typedef struct pybn_tensor {
  void *data;
  pybn_device device;
  int32_t ndim;
  pybn_dtype dtype;
  const int64_t *shape;
  const int64_t *strides;        /* in elements; NULL means C-contiguous */
  uint64_t byte_offset;
} pybn_tensor;

typedef enum pybn_backend {
  PYBN_BACKEND_AUTO = 0,         /* let pybn choose (the rules of SPEC.md "Backends") */
  PYBN_BACKEND_CPU = 1,
  PYBN_BACKEND_CUDA = 2,
  PYBN_BACKEND_CUDNN = 3
} pybn_backend;

typedef enum pybn_grad_req {
  PYBN_GRAD_WRITE = 0,           /* overwrite the gradient buffer */
  PYBN_GRAD_ADD = 1,             /* accumulate into it (MXNet's kAddTo) */
  PYBN_GRAD_NULL = 2             /* do not compute it; the buffer may be NULL and is untouched */
} pybn_grad_req;

/* Every parameter of MXNet's BatchNorm, plus the dispatch fields. Fill it with
 * pybn_params_default() and then change what you need, so that fields added later get
 * their defaults. */
typedef struct pybn_params {
  double eps;                    /* 1e-3; finite, >= 0 (and >= the cuDNN floor on cuDNN) */
  double momentum;               /* 0.9; in [0, 1] */
  int32_t fix_gamma;             /* 1: gamma is taken as 1, set to 1 in place, gradient 0 */
  int32_t use_global_stats;      /* 0: 1 normalizes with the moving statistics */
  int32_t output_mean_var;       /* 0: 1 makes the mean and invstd outputs required */
  int32_t axis;                  /* 1: the channel axis; negative counts from the end */
  int32_t cudnn_off;             /* 0: 1 never selects the cuDNN backend */
  int32_t training;              /* 1: MXNet's is_train */
  int32_t grad_req_data;         /* PYBN_GRAD_WRITE: request for dx (backward only) */
  int32_t grad_req_gamma;        /* PYBN_GRAD_WRITE: request for dgamma */
  int32_t grad_req_beta;         /* PYBN_GRAD_WRITE: request for dbeta */
  int32_t backend;               /* PYBN_BACKEND_AUTO, or a backend to force */
  void *stream;                  /* cudaStream_t for device backends; ignored on the CPU */
} pybn_params;

/* ---- library facts ---------------------------------------------------------------- */

PYBN_API int pybn_version(void);           /* PYBN_VERSION of the loaded library */
PYBN_API int pybn_abi_version(void);       /* PYBN_ABI_VERSION of the loaded library */
PYBN_API const char *pybn_version_string(void);  /* e.g. "0.1.0" */
PYBN_API const char *pybn_status_string(pybn_status status);
/* The message of the calling thread's last failed call ("" if none). Valid until the
 * thread's next pybn call. */
PYBN_API const char *pybn_last_error(void);

PYBN_API void pybn_params_default(pybn_params *params);

/* ---- backends ---------------------------------------------------------------------- */

PYBN_API const char *pybn_backend_name(pybn_backend backend);  /* "cpu", "cuda", "cudnn" */
/* 1 if compiled into this library, else 0. */
PYBN_API int pybn_backend_built(pybn_backend backend);
/* 1 if usable now (built, and its driver / runtime library found), else 0. */
PYBN_API int pybn_backend_available(pybn_backend backend);
/* Which backend pybn_forward / pybn_backward would run for this data and these flags
 * (params->axis, params->cudnn_off, params->backend). Writes *backend on success. */
PYBN_API pybn_status pybn_select_backend(const pybn_params *params, const pybn_tensor *data,
                                         pybn_backend *backend);
/* The cuDNN minimum epsilon of the cuDNN headers pybn was built with.
 * PYBN_ERROR_NOT_SUPPORTED when cuDNN is not built in. */
PYBN_API pybn_status pybn_cudnn_min_epsilon(double *eps);

/* Threads the CPU backend uses: the count set by pybn_cpu_set_num_threads, else OpenMP's
 * maximum for the calling thread (OMP_NUM_THREADS, omp_set_num_threads); 1 without OpenMP,
 * and 1 in a child of fork() (libgomp's threads do not survive a fork; a team in the child
 * would wait for them). Small calls use fewer: one under 16K elements, else one per 16K
 * elements (at least two), up to this count. */
PYBN_API int pybn_cpu_num_threads(void);
/* Sets the threads of the CPU backend for every calling thread of the process, whatever
 * OpenMP's setting for other libraries: threads >= 1 that many, 0 back to OpenMP's maximum.
 * Results do not depend on it (bit for bit). Fewer threads than cores pay off where other
 * work keeps the cores busy: a team then waits for threads the system has not scheduled
 * (README, "Threads"). PYBN_ERROR_INVALID_VALUE for a negative count. */
PYBN_API pybn_status pybn_cpu_set_num_threads(int threads);
/* The SIMD code path the CPU backend picked at its first use: "avx512bf16" (AVX-512 with
 * AVX512_BF16), "avx512", "avx2" or "baseline". All give the same results, bit for bit (but
 * for the sign and payload of a NaN, which come from whichever operation made it). */
PYBN_API const char *pybn_cpu_isa(void);
/* Scratch memory of the CPU backend. Each thread that calls pybn keeps the buffer its calls'
 * scratch arrays come from (partial sums, coefficients: a few KB to a few hundred KB for
 * common shapes, at most 4 MB), so that calls do not allocate; it is freed when the thread
 * exits. pybn_cpu_scratch_bytes: the size of the calling thread's buffer.
 * pybn_cpu_release_scratch: frees it now (later calls allocate it again as they need it). */
PYBN_API size_t pybn_cpu_scratch_bytes(void);
PYBN_API void pybn_cpu_release_scratch(void);

/* ---- host memory for outputs ------------------------------------------------------ */
/* A fresh output of tens of MB costs page faults, the system zeroing each page as it is
 * first written, that can take longer than the normalization itself (float32
 * 32x256x56x56 training on a 2-core machine: 5.7 ms into a buffer written before, 22 ms
 * into a fresh one). Memory from pybn_host_alloc avoids that from the second call on:
 * blocks of at least PYBN_HOST_CACHE_MIN_BYTES given back by pybn_host_free are kept,
 * their pages mapped, and handed out again to requests of the same size class (the size
 * rounded up to 2 MiB, the huge page); idle blocks past the cache's limit go back to the
 * system, the longest idle first. Smaller blocks come from the C++ heap. pybn's Python API
 * takes its NumPy outputs from here. Blocks are 64-byte aligned (4096-byte from
 * PYBN_HOST_CACHE_MIN_BYTES on), their contents undefined. Thread-safe.
 * The limit on idle bytes starts at the environment variable PYBN_HOST_CACHE_MB (MiB), read
 * once, else 1024 MiB; 0 turns the cache off. */
#define PYBN_HOST_CACHE_MIN_BYTES ((size_t)4 << 20)

/* *ptr = a block of at least `bytes` bytes (a distinct block for 0). On failure
 * PYBN_ERROR_OUT_OF_MEMORY and *ptr = NULL (the cache's idle blocks are freed and the
 * allocation tried again before that). */
PYBN_API pybn_status pybn_host_alloc(size_t bytes, void **ptr);
/* realloc's contract: *new_ptr = a block of `bytes` bytes holding the first
 * min(old size, bytes) bytes of ptr's block, which is given back (unless it is returned
 * again). ptr NULL allocates. On failure (PYBN_ERROR_OUT_OF_MEMORY) ptr's block stays valid
 * and *new_ptr = NULL. As with realloc and free, a block already given back, or a pointer
 * that did not come from here, is undefined behaviour; where pybn can tell (a large block
 * still idle in the cache) realloc fails with PYBN_ERROR_INVALID_VALUE instead. */
PYBN_API pybn_status pybn_host_realloc(void *ptr, size_t bytes, void **new_ptr);
/* Gives a block of pybn_host_alloc / pybn_host_realloc back; NULL does nothing (a block
 * given back twice: undefined, as with free). */
PYBN_API void pybn_host_free(void *ptr);
/* Bytes of the idle blocks the cache holds now (their full size classes). */
PYBN_API size_t pybn_host_cache_bytes(void);
PYBN_API size_t pybn_host_cache_limit(void);
/* Sets the limit on idle bytes, freeing the idle blocks above it now; 0 turns the cache
 * off (and frees every idle block). */
PYBN_API void pybn_host_cache_set_limit(size_t bytes);
/* Frees every idle block now; the limit stays. */
PYBN_API void pybn_host_cache_release(void);

/* ---- the operator ------------------------------------------------------------------ */

/*
 * Forward: y = (data - mean) * invstd * g + beta per channel (SPEC.md "Forward").
 * Training without use_global_stats uses the batch statistics and updates moving_mean and
 * moving_var in place; otherwise the moving statistics are used and left untouched.
 * With fix_gamma, gamma is set to 1 in place.
 *   data          ndim >= 1, float16 / bfloat16 / float32 / float64, any dense layout
 *   gamma, beta, moving_mean, moving_var
 *                 shape (C,), float32 for 16-bit data, else data's dtype; any stride
 *   y             data's shape, dtype and strides; may be data itself (in place)
 *   mean, invstd  (C,) outputs, the statistics used; may be NULL unless output_mean_var
 */
PYBN_API pybn_status pybn_forward(const pybn_params *params, const pybn_tensor *data,
                                  const pybn_tensor *gamma, const pybn_tensor *beta,
                                  const pybn_tensor *moving_mean, const pybn_tensor *moving_var,
                                  const pybn_tensor *y, const pybn_tensor *mean,
                                  const pybn_tensor *invstd);

/*
 * Backward (SPEC.md "Backward"): gradients of data, gamma and beta, given dy and the mean
 * and invstd the forward used. params->grad_req_* say write / add / null for each; a
 * NULL output needs the null request.
 *   dy, dx        data's shape, dtype and strides
 *   gamma, mean, invstd, dgamma, dbeta   (C,), the parameter dtype
 */
PYBN_API pybn_status pybn_backward(const pybn_params *params, const pybn_tensor *dy,
                                   const pybn_tensor *data, const pybn_tensor *gamma,
                                   const pybn_tensor *mean, const pybn_tensor *invstd,
                                   const pybn_tensor *dx, const pybn_tensor *dgamma,
                                   const pybn_tensor *dbeta);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PYBN_PYBN_H_ */
