// Picks the CPU kernel build for this processor once, at first use: AVX-512 (F, BW, VL, DQ)
// with AVX512_BF16, AVX-512, AVX2 (+FMA, F16C), or the baseline x86-64 / any-architecture
// build. All give the same bits (a NaN's sign and payload aside).
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <unistd.h>
#endif

#include "../plan.hpp"

namespace pybn {

#define PYBN_DECLARE_ISA(ns)                   \
  namespace ns {                               \
  void forward(const ForwardPlan &plan);       \
  void backward(const BackwardPlan &plan);     \
  }
PYBN_DECLARE_ISA(isa_baseline)
#if defined(PYBN_HAVE_X86_ISAS)
PYBN_DECLARE_ISA(isa_avx2)
PYBN_DECLARE_ISA(isa_avx512)
#endif
#if defined(PYBN_HAVE_X86_ISAS) && defined(PYBN_HAVE_AVX512BF16_BUILD)
PYBN_DECLARE_ISA(isa_avx512bf16)
#endif
#undef PYBN_DECLARE_ISA

namespace {

struct CpuKernels {
  const char *name;
  void (*forward)(const ForwardPlan &);
  void (*backward)(const BackwardPlan &);
};

// PYBN_CPU_ISA=baseline|avx2|avx512|avx512bf16 caps the choice (for tests and comparisons).
CpuKernels pick_kernels() {
  const char *cap = std::getenv("PYBN_CPU_ISA");
  const bool allow_avx512bf16 = !cap || std::strcmp(cap, "avx512bf16") == 0;
  const bool allow_avx512 = allow_avx512bf16 || std::strcmp(cap, "avx512") == 0;
  const bool allow_avx2 = allow_avx512 || std::strcmp(cap, "avx2") == 0;
  (void)allow_avx2;
  (void)allow_avx512bf16;
#if defined(PYBN_HAVE_X86_ISAS)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#if defined(PYBN_HAVE_AVX512BF16_BUILD)
  if (allow_avx512bf16 && avx512 && __builtin_cpu_supports("avx512bf16"))
    return {"avx512bf16", isa_avx512bf16::forward, isa_avx512bf16::backward};
#endif
  if (allow_avx512 && avx512) return {"avx512", isa_avx512::forward, isa_avx512::backward};
  if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return {"avx2", isa_avx2::forward, isa_avx2::backward};
#endif
  return {"baseline", isa_baseline::forward, isa_baseline::backward};
}

const CpuKernels &kernels() {
  static const CpuKernels chosen = pick_kernels();  // thread-safe one-time initialisation
  return chosen;
}

}  // namespace

void cpu_forward(const ForwardPlan &plan) { kernels().forward(plan); }
void cpu_backward(const BackwardPlan &plan) { kernels().backward(plan); }
const char *cpu_isa_name() { return kernels().name; }

bool cpu_stream_stores_enabled() {
  static const bool enabled = [] {
    const char *setting = std::getenv("PYBN_CPU_STREAM_STORES");
    return !(setting && std::strcmp(setting, "0") == 0);
  }();
  return enabled;
}

// Long enough that two threads running side by side never give up on each other (their parts
// of an item take the same time, and a sleeping OpenMP worker wakes within tens of
// microseconds), short against the milliseconds a thread that lost its core waits to get it
// back.
constexpr long kDefaultShareWaitUs = 200;

namespace {
// The environment variable `name` as a whole number in [0, max], else `fallback` (unset or
// malformed).
long env_count(const char *name, long max, long fallback) {
  const char *setting = std::getenv(name);
  if (!setting) return fallback;
  char *end = nullptr;
  const long value = std::strtol(setting, &end, 10);
  return end != setting && *end == '\0' && value >= 0 && value <= max ? value : fallback;
}
}  // namespace

int64_t cpu_share_wait_ns() {
  static const int64_t wait_ns = int64_t(env_count("PYBN_CPU_SHARE_WAIT_US", 1000000, kDefaultShareWaitUs)) * 1000;
  return wait_ns;
}

int64_t cpu_share_split_round() {
  static const int64_t round = env_count("PYBN_CPU_SHARE_SPLIT_AT", LONG_MAX, -1);
  return round;
}

int64_t cpu_last_level_cache_bytes() {
  static const int64_t bytes = [] {
    constexpr long kFallbackMb = 32;  // a common size where the system does not say
    long system = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE)
    system = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    const long fallback_mb = system > 0 ? (system + (1L << 20) - 1) >> 20 : kFallbackMb;
    return int64_t(env_count("PYBN_CPU_LLC_MB", 1L << 30, fallback_mb)) << 20;
  }();
  return bytes;
}

// libgomp's thread pool does not survive fork(): only the forking thread is copied, and a
// child that opens a team of more than one thread after its parent had one waits for the
// pool's threads forever (python's multiprocessing with the fork start method, the default on
// Linux before 3.14). So a forked child runs pybn on one thread, as PyTorch does. Set by a
// fork handler registered when the library loads.
namespace {
std::atomic<bool> in_forked_child{false};
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
const int fork_handler_registered = pthread_atfork(nullptr, nullptr, [] { in_forked_child = true; });
#endif
// pybn_cpu_set_num_threads; 0: OpenMP's maximum, read at each call (it is per calling thread).
std::atomic<int> threads_set{0};
}  // namespace

int cpu_num_threads() {
#ifdef _OPENMP
  if (in_forked_child.load(std::memory_order_relaxed)) return 1;
  const int set = threads_set.load(std::memory_order_relaxed);
  return set > 0 ? set : omp_get_max_threads();
#else
  return 1;
#endif
}

void cpu_set_num_threads(int threads) { threads_set.store(threads, std::memory_order_relaxed); }

}  // namespace pybn
