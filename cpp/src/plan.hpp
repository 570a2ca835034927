// A Plan is what validation (validate.cpp) hands to a backend: every argument checked, the
// data reduced to an (outer, C, inner) view of dense memory, pointers resolved. Only the
// plan_* functions build one, so a backend that receives a plan never needs to check
// anything and "nothing is written on error" holds by construction.
#pragma once

#include <cstdint>

#include "pybn/pybn.h"
#include "types.hpp"

namespace pybn {

// Element (o, c, i) of the data lives at offset (o * channels + c) * inner + i elements.
// Every dense layout (C order or any permutation of it, e.g. channels_last) has this form.
struct View {
  int64_t outer = 0;
  int64_t channels = 0;
  int64_t inner = 0;
  int64_t items_per_channel() const { return outer * inner; }  // M in SPEC.md
  int64_t size() const { return outer * channels * inner; }
};

// A (C,) vector of the statistic dtype, any stride (in elements). data == nullptr: absent.
struct StatVector {
  char *data = nullptr;
  int64_t stride = 1;
  explicit operator bool() const { return data != nullptr; }
};

enum class Backend { cpu = PYBN_BACKEND_CPU, cuda = PYBN_BACKEND_CUDA, cudnn = PYBN_BACKEND_CUDNN };
enum class GradReq { write = PYBN_GRAD_WRITE, add = PYBN_GRAD_ADD, null = PYBN_GRAD_NULL };

struct ForwardPlan {
  Backend backend = Backend::cpu;
  void *stream = nullptr;
  DType dtype = DType::f32;
  View view;
  const void *x = nullptr;
  void *y = nullptr;
  StatVector gamma, beta, moving_mean, moving_var;
  StatVector mean, invstd;  // optional outputs
  double eps = 1e-3;
  double momentum = 0.9;
  bool fix_gamma = true;
  bool batch_stats = true;  // training and not use_global_stats
};

struct BackwardPlan {
  Backend backend = Backend::cpu;
  void *stream = nullptr;
  DType dtype = DType::f32;
  View view;
  const void *dy = nullptr;
  const void *x = nullptr;
  void *dx = nullptr;
  StatVector gamma, mean, invstd;
  StatVector dgamma, dbeta;
  GradReq req_data = GradReq::write, req_gamma = GradReq::write, req_beta = GradReq::write;
  bool fix_gamma = true;
  bool batch_stats = true;
};

ForwardPlan plan_forward(const pybn_params *params, const pybn_tensor *data,
                         const pybn_tensor *gamma, const pybn_tensor *beta,
                         const pybn_tensor *moving_mean, const pybn_tensor *moving_var,
                         const pybn_tensor *y, const pybn_tensor *mean, const pybn_tensor *invstd);

BackwardPlan plan_backward(const pybn_params *params, const pybn_tensor *dy,
                           const pybn_tensor *data, const pybn_tensor *gamma,
                           const pybn_tensor *mean, const pybn_tensor *invstd,
                           const pybn_tensor *dx, const pybn_tensor *dgamma,
                           const pybn_tensor *dbeta);

Backend select_backend(const pybn_params *params, const pybn_tensor *data);

// Backends: each runs a plan it trusts.
void cpu_forward(const ForwardPlan &plan);
void cpu_backward(const BackwardPlan &plan);
const char *cpu_isa_name();
// Streaming (non-temporal) stores for large outputs: on unless PYBN_CPU_STREAM_STORES=0.
bool cpu_stream_stores_enabled();
// How long a thread of a group sharing channels waits for the others at an item before it
// goes on alone (Forward::shared_channels): PYBN_CPU_SHARE_WAIT_US, in nanoseconds.
int64_t cpu_share_wait_ns();
// For tests: the round of its items at which every such group gives up at once
// (PYBN_CPU_SHARE_SPLIT_AT); -1, the default: none.
int64_t cpu_share_split_round();
// The last-level cache's size in bytes (tensors larger than it are never found there): the
// system's L3 size, else 32 MiB where it does not say; PYBN_CPU_LLC_MB overrides it.
int64_t cpu_last_level_cache_bytes();
// The count pybn_cpu_set_num_threads set, else OpenMP's maximum; 1 without OpenMP and in a
// child of fork() (cpu_dispatch.cpp).
int cpu_num_threads();
void cpu_set_num_threads(int threads);  // 0: OpenMP's maximum again

}  // namespace pybn
