// The C ABI. Every entry point goes through guarded(), the one place where C++ exceptions
// stop: a pybn::Error becomes its status, anything else INTERNAL / OUT_OF_MEMORY, and the
// message lands in the calling thread's last-error slot.
#include <exception>
#include <new>
#include <string>

#include "cpu/scratch.hpp"
#include "error.hpp"
#include "host_memory.hpp"
#include "plan.hpp"
#include "pybn/pybn.h"

namespace pybn {
namespace {

thread_local std::string last_error_message;

template <class Body>
pybn_status guarded(Body &&body) noexcept {
  try {
    last_error_message.clear();
    body();
    return PYBN_SUCCESS;
  } catch (const Error &e) {
    last_error_message = e.what();
    return e.status();
  } catch (const std::bad_alloc &) {
    last_error_message = "out of host memory for pybn's scratch buffers";
    return PYBN_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    last_error_message = std::string("internal error: ") + e.what();
    return PYBN_ERROR_INTERNAL;
  } catch (...) {
    last_error_message = "internal error: unknown exception";
    return PYBN_ERROR_INTERNAL;
  }
}

#define PYBN_STRINGIFY2(x) #x
#define PYBN_STRINGIFY(x) PYBN_STRINGIFY2(x)

}  // namespace
}  // namespace pybn

using namespace pybn;

extern "C" {

PYBN_API int pybn_version(void) { return PYBN_VERSION; }
PYBN_API int pybn_abi_version(void) { return PYBN_ABI_VERSION; }
PYBN_API const char *pybn_version_string(void) {
  return PYBN_STRINGIFY(PYBN_VERSION_MAJOR) "." PYBN_STRINGIFY(PYBN_VERSION_MINOR) "." PYBN_STRINGIFY(
      PYBN_VERSION_PATCH);
}

PYBN_API const char *pybn_status_string(pybn_status status) {
  switch (status) {
    case PYBN_SUCCESS: return "PYBN_SUCCESS";
    case PYBN_ERROR_INVALID_VALUE: return "PYBN_ERROR_INVALID_VALUE";
    case PYBN_ERROR_INVALID_TYPE: return "PYBN_ERROR_INVALID_TYPE";
    case PYBN_ERROR_NOT_SUPPORTED: return "PYBN_ERROR_NOT_SUPPORTED";
    case PYBN_ERROR_DEVICE: return "PYBN_ERROR_DEVICE";
    case PYBN_ERROR_OUT_OF_MEMORY: return "PYBN_ERROR_OUT_OF_MEMORY";
    case PYBN_ERROR_INTERNAL: return "PYBN_ERROR_INTERNAL";
  }
  return "PYBN_UNKNOWN_STATUS";
}

PYBN_API const char *pybn_last_error(void) { return last_error_message.c_str(); }

PYBN_API void pybn_params_default(pybn_params *params) {
  if (!params) return;
  *params = pybn_params{};
  params->eps = 1e-3;
  params->momentum = 0.9;
  params->fix_gamma = 1;
  params->use_global_stats = 0;
  params->output_mean_var = 0;
  params->axis = 1;
  params->cudnn_off = 0;
  params->training = 1;
  params->grad_req_data = PYBN_GRAD_WRITE;
  params->grad_req_gamma = PYBN_GRAD_WRITE;
  params->grad_req_beta = PYBN_GRAD_WRITE;
  params->backend = PYBN_BACKEND_AUTO;
  params->stream = nullptr;
}

PYBN_API const char *pybn_backend_name(pybn_backend backend) {
  switch (backend) {
    case PYBN_BACKEND_AUTO: return "auto";
    case PYBN_BACKEND_CPU: return "cpu";
    case PYBN_BACKEND_CUDA: return "cuda";
    case PYBN_BACKEND_CUDNN: return "cudnn";
  }
  return "unknown";
}

PYBN_API int pybn_backend_built(pybn_backend backend) { return backend == PYBN_BACKEND_CPU ? 1 : 0; }
PYBN_API int pybn_backend_available(pybn_backend backend) { return pybn_backend_built(backend); }

PYBN_API pybn_status pybn_select_backend(const pybn_params *params, const pybn_tensor *data,
                                         pybn_backend *backend) {
  return guarded([&] {
    if (!backend) fail_value("backend (the output pointer) is NULL");
    *backend = static_cast<pybn_backend>(select_backend(params, data));
  });
}

PYBN_API pybn_status pybn_cudnn_min_epsilon(double *eps) {
  return guarded([&] {
    (void)eps;
    fail_not_supported("this pybn was built without cuDNN");
  });
}

PYBN_API int pybn_cpu_num_threads(void) { return cpu_num_threads(); }
PYBN_API pybn_status pybn_cpu_set_num_threads(int threads) {
  return guarded([&] {
    if (threads < 0) fail_value("threads must be >= 1, or 0 for OpenMP's maximum; got " + std::to_string(threads));
    cpu_set_num_threads(threads);
  });
}
PYBN_API const char *pybn_cpu_isa(void) { return cpu_isa_name(); }
PYBN_API size_t pybn_cpu_scratch_bytes(void) { return scratch_arena_bytes(); }
PYBN_API void pybn_cpu_release_scratch(void) { scratch_arena_free(); }

PYBN_API pybn_status pybn_host_alloc(size_t bytes, void **ptr) {
  return guarded([&] {
    if (!ptr) fail_value("ptr (the output pointer) is NULL");
    *ptr = host_allocate(bytes);
    if (!*ptr) throw Error(PYBN_ERROR_OUT_OF_MEMORY, "out of host memory: " + std::to_string(bytes) + " bytes");
  });
}

PYBN_API pybn_status pybn_host_realloc(void *ptr, size_t bytes, void **new_ptr) {
  return guarded([&] {
    if (!new_ptr) fail_value("new_ptr (the output pointer) is NULL");
    *new_ptr = nullptr;
    // A large block given back and idle in the cache: the one double use pybn can see (any
    // other is undefined, see pybn.h), reported as what it is rather than out of memory.
    if (ptr && !host_block_is_live(ptr)) fail_value("ptr is not a live block of pybn_host_alloc: given back already?");
    *new_ptr = host_reallocate(ptr, bytes);
    if (!*new_ptr) throw Error(PYBN_ERROR_OUT_OF_MEMORY, "out of host memory: " + std::to_string(bytes) + " bytes");
  });
}

PYBN_API void pybn_host_free(void *ptr) { host_free(ptr); }
PYBN_API size_t pybn_host_cache_bytes(void) { return host_cache_idle_bytes(); }
PYBN_API size_t pybn_host_cache_limit(void) { return host_cache_limit(); }
PYBN_API void pybn_host_cache_set_limit(size_t bytes) { host_cache_set_limit(bytes); }
PYBN_API void pybn_host_cache_release(void) { host_cache_release(); }

PYBN_API pybn_status pybn_forward(const pybn_params *params, const pybn_tensor *data,
                                  const pybn_tensor *gamma, const pybn_tensor *beta,
                                  const pybn_tensor *moving_mean, const pybn_tensor *moving_var,
                                  const pybn_tensor *y, const pybn_tensor *mean,
                                  const pybn_tensor *invstd) {
  return guarded([&] {
    const ForwardPlan plan =
        plan_forward(params, data, gamma, beta, moving_mean, moving_var, y, mean, invstd);
    cpu_forward(plan);  // plan_forward only returns CPU plans until a device backend is built
  });
}

PYBN_API pybn_status pybn_backward(const pybn_params *params, const pybn_tensor *dy,
                                   const pybn_tensor *data, const pybn_tensor *gamma,
                                   const pybn_tensor *mean, const pybn_tensor *invstd,
                                   const pybn_tensor *dx, const pybn_tensor *dgamma,
                                   const pybn_tensor *dbeta) {
  return guarded([&] {
    const BackwardPlan plan = plan_backward(params, dy, data, gamma, mean, invstd, dx, dgamma, dbeta);
    cpu_backward(plan);
  });
}

}  // extern "C"
