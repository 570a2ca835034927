// What pybn's per-element arithmetic costs on this machine with the data in cache: the time
// of each formula per 16-element vector on one thread, in nanoseconds and in core cycles.
//
// The floors of bench/cpu.py move bytes without converting or computing anything. Where the
// arithmetic a row needs takes about as long as its floor (float16: every element converted
// in twice and out once, in training), no schedule can reach a small multiple of that floor:
// the row is compute-bound on this machine, whatever the memory does. This program measures
// that arithmetic by itself, in loops over buffers that stay in L1 (by default), one thread:
//   f16 load       convert 16 halves in and add them up (F16C / AVX-512 vcvtph2ps)
//   ... x4         the same with four accumulators per sum instead of two: where it is faster,
//                  the two-accumulator line timed the chains of additions, not the instructions
//   f16 store      convert 16 floats to halves and store them (vcvtps2ph)
//   f16 moments    pybn's 16-bit statistics: convert in, d = x - origin, sum d, sum d * d (FMA)
//   f16 normalize  pybn's 16-bit normalization: convert in, (x - mean) * scale + shift (FMA),
//                  convert out and store
//   f32 moments    the float32 statistics: d = x - origin, sum d, sum d * d (two roundings)
//   f32 normalize  the float32 normalization: (x - mean) * scale + shift (two roundings)
//   f16 copy       32 bytes loaded and stored, nothing converted (the floors' work per vector)
// The cycles come from a chain of dependent register additions timed in every round (one a
// cycle), so they hold at whatever clock the core runs, with two caveats: another process on
// the core slows the chain and the loops unevenly (run it on a quiet machine), and a core
// that lowers its clock for 512-bit code runs the chain faster than the loops (their cycles
// then come out high; the ns do not). The last lines model a training forward (statistics,
// then normalization: each element through both loops) per element and thread: n elements on
// t threads take about n / t times that in arithmetic, to set beside bench/cpu.py's copy floor
// for the same bytes (bench/RESULTS.md, "Stop 36"). pybn runs the two in one loop, which can
// issue them a little tighter than two loops do.
//
// x86-64 with AVX-512 only. From the repository root (it does not use the library):
//   g++ -O2 -mavx512f -mavx512bw -mavx512dq -mf16c bench/convert_costs.cpp -o /tmp/convert_costs
// (no_contraction.h keeps float32 to two roundings without -ffp-contract=off)
//   /tmp/convert_costs [kilobytes of float16 input] [rounds]
// (default 8 KB: the float32 buffers, twice that in and out, stay in L1 too; 21 rounds).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "no_contraction.h"  // float32 kept to two roundings, as the library

namespace {

constexpr int kLanes = 16;                  // floats in a 512-bit vector
constexpr double kMinSampleSeconds = 1e-3;  // repetitions per sample are raised until one lasts this

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

volatile float sink;  // keeps the reductions' results alive

// The zero-masked forms, every lane set: the plain intrinsics start from an undefined
// register that GCC 12 warns of.
inline __m512 load_half16(const uint16_t *p) {
  return _mm512_maskz_cvtph_ps(__mmask16(0xffff), _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}
inline void store_half16(uint16_t *p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(p),
                      _mm512_maskz_cvtps_ph(__mmask16(0xffff), v, _MM_FROUND_TO_NEAREST_INT));
}
inline float lane_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0.0f;
  for (float l : lanes) s += l;
  return s;
}

// The buffers, for the program's life. Each starts on a 4 KB page, the outputs half a page in:
// a load whose address matches an earlier store's in its low 12 bits waits for that store
// (4K aliasing), and the times would depend on where the allocator put them (float32
// normalization 2.7 against 7.3 cycles a vector, two runs with the outputs 16 bytes apart).
template <class T> T *on_page(int64_t n, int64_t offset_bytes) {
  const size_t bytes = size_t(n) * sizeof(T) + size_t(offset_bytes);
  char *page = static_cast<char *>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
  if (page == nullptr) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(1);
  }
  std::memset(page, 0, bytes);
  return reinterpret_cast<T *>(page + offset_bytes);
}
struct Buffers {
  int64_t n;  // elements, a multiple of 4 * kLanes
  uint16_t *x16, *y16;
  float *x32, *y32;
};

// The formulas, each over the whole buffer. The reductions take Chains vectors an iteration
// (Chains accumulators per sum): two, as pybn's loops take two logical vectors a step, or four
// (an addition's latency is about 3 cycles here, so two chains allow at most one vector every
// 1.5 cycles).
template <int Chains> void f16_load(Buffers &b) {
  __m512 s[Chains];
  for (int k = 0; k < Chains; ++k) s[k] = _mm512_setzero_ps();
  for (int64_t i = 0; i < b.n; i += Chains * kLanes)
#pragma GCC unroll 4
    for (int k = 0; k < Chains; ++k) s[k] = _mm512_add_ps(s[k], load_half16(&b.x16[i + k * kLanes]));
  for (int k = 1; k < Chains; ++k) s[0] = _mm512_add_ps(s[0], s[k]);
  sink = lane_sum(s[0]);
}
void f16_store(Buffers &b) {
  for (int64_t i = 0; i < b.n; i += kLanes) store_half16(&b.y16[i], _mm512_loadu_ps(&b.x32[i]));
}
// The statistics' loop: d = x - origin, sum d, sum d * d. load(i): the float32 vector of
// elements i .. i + 15; square_add(d, q): q + d * d, rounded as the type's formula rounds it.
template <int Chains, class Load, class SquareAdd> float moments(int64_t n, Load load, SquareAdd square_add) {
  const __m512 origin = _mm512_set1_ps(0.25f);
  __m512 a[Chains], q[Chains];
  for (int k = 0; k < Chains; ++k) a[k] = q[k] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += Chains * kLanes)
#pragma GCC unroll 4
    for (int k = 0; k < Chains; ++k) {
      const __m512 d = _mm512_sub_ps(load(i + k * kLanes), origin);
      a[k] = _mm512_add_ps(a[k], d);
      q[k] = square_add(d, q[k]);
    }
  for (int k = 1; k < Chains; ++k) {
    a[0] = _mm512_add_ps(a[0], a[k]);
    q[0] = _mm512_add_ps(q[0], q[k]);
  }
  return lane_sum(_mm512_add_ps(a[0], q[0]));
}
template <int Chains> void f16_moments(Buffers &b) {  // 16-bit types: one rounding (FMA)
  sink = moments<Chains>(
      b.n, [&](int64_t i) { return load_half16(&b.x16[i]); },
      [](__m512 d, __m512 q) { return _mm512_fmadd_ps(d, d, q); });
}
void f16_normalize(Buffers &b) {
  const __m512 mean = _mm512_set1_ps(0.25f), scale = _mm512_set1_ps(1.5f), shift = _mm512_set1_ps(-0.5f);
  for (int64_t i = 0; i < b.n; i += kLanes)
    store_half16(&b.y16[i], _mm512_fmadd_ps(_mm512_sub_ps(load_half16(&b.x16[i]), mean), scale, shift));
}
template <int Chains> void f32_moments(Buffers &b) {  // float32: the product and the sum rounded apart
  sink = moments<Chains>(
      b.n, [&](int64_t i) { return _mm512_loadu_ps(&b.x32[i]); },
      [](__m512 d, __m512 q) { return _mm512_add_ps(q, _mm512_mul_ps(d, d)); });
}
void f32_normalize(Buffers &b) {
  const __m512 mean = _mm512_set1_ps(0.25f), scale = _mm512_set1_ps(1.5f), shift = _mm512_set1_ps(-0.5f);
  for (int64_t i = 0; i < b.n; i += kLanes)
    _mm512_storeu_ps(&b.y32[i],
                     _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(&b.x32[i]), mean), scale), shift));
}
void f16_copy(Buffers &b) {
  for (int64_t i = 0; i < b.n; i += kLanes)
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(&b.y16[i]),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(&b.x16[i])));
}

// A chain of 2^20 dependent register additions: one cycle each. Register to register, since
// Golden Cove class cores fold additions of an immediate at rename (a chain of `add $1` ran
// at up to six a cycle here); eight to an iteration, so that the loop's own counter and
// branch hide under the chain.
constexpr int64_t kChain = int64_t(1) << 20;
void add_chain(Buffers &) {
  int64_t v = 0;
  const int64_t step = 1;  // in a register ("r"): add %reg, %reg
  for (int64_t i = 0; i < kChain; i += 8)
    asm volatile(
        "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
        "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
        : "+r"(v)
        : "r"(step));
  sink = float(v);
}

using Kernel = void (*)(Buffers &);

// Repetitions of k that last at least kMinSampleSeconds (and warm the caches).
int64_t calibrate(Kernel k, Buffers &b) {
  for (int64_t calls = 1;; calls *= 2) {
    const double start = seconds();
    for (int64_t c = 0; c < calls; ++c) k(b);
    if (seconds() - start >= kMinSampleSeconds) return calls;
  }
}
double sample(Kernel k, Buffers &b, int64_t calls) {  // seconds per call
  const double start = seconds();
  for (int64_t c = 0; c < calls; ++c) k(b);
  return (seconds() - start) / double(calls);
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char **argv) {
  const int64_t kilobytes = argc > 1 ? std::atol(argv[1]) : 8;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 21;
  if (kilobytes <= 0 || kilobytes > (int64_t(1) << 20) || rounds <= 0) {
    std::fprintf(stderr, "usage: %s [kilobytes of float16 input, at most 1048576] [rounds]\n", argv[0]);
    return 2;
  }
  Buffers b;
  b.n = kilobytes * 1024 / 2 / (4 * kLanes) * (4 * kLanes);
  b.x16 = on_page<uint16_t>(b.n, 0);
  b.y16 = on_page<uint16_t>(b.n, 2048);
  b.x32 = on_page<float>(b.n, 0);
  b.y32 = on_page<float>(b.n, 2048);
  for (int64_t i = 0; i < b.n; ++i) {
    b.x32[i] = float(i % 977) * 0.001f;
    b.x16[i] = uint16_t(_cvtss_sh(b.x32[i], _MM_FROUND_TO_NEAREST_INT));
  }
  const struct {
    const char *name;
    Kernel kernel;
  } kernels[] = {{"f16 load", f16_load<2>},       {"f16 store", f16_store},          {"f16 moments", f16_moments<2>},
                 {"f16 normalize", f16_normalize}, {"f32 moments", f32_moments<2>},   {"f32 normalize", f32_normalize},
                 {"f16 copy", f16_copy},           {"f16 load x4", f16_load<4>},      {"f16 moments x4", f16_moments<4>},
                 {"f32 moments x4", f32_moments<4>}};
  constexpr size_t kKernels = sizeof kernels / sizeof kernels[0];
  const double vectors = double(b.n / kLanes);
  // Each round times the addition chain, then every kernel: a kernel's cycles are its time over
  // the cycle time of its own round, so that a clock that drifts during the run moves both
  // alike (another process sharing the core does not: see the top of the file).
  const int64_t chain_calls = calibrate(add_chain, b);
  int64_t calls[kKernels];
  for (size_t k = 0; k < kKernels; ++k) calls[k] = calibrate(kernels[k].kernel, b);
  std::vector<double> cycle_s, ns[kKernels], cycles[kKernels];
  for (int r = 0; r < rounds; ++r) {
    const double cycle = sample(add_chain, b, chain_calls) / double(kChain);
    cycle_s.push_back(cycle);
    for (size_t k = 0; k < kKernels; ++k) {
      const double per_vector = sample(kernels[k].kernel, b, calls[k]) / vectors;
      ns[k].push_back(per_vector * 1e9);
      cycles[k].push_back(per_vector / cycle);
    }
  }
  std::printf("%lld elements (float16 %lld KB, float32 %lld KB, each in and out), 1 thread, %d rounds; "
              "clock %.2f GHz (median; a chain of dependent additions)\n",
              static_cast<long long>(b.n), static_cast<long long>(b.n * 2 / 1024),
              static_cast<long long>(b.n * 4 / 1024), rounds, 1e-9 / median(cycle_s));
  double per_vector[kKernels];
  // The fastest: the kernel's fastest sample over the chain's fastest (an interrupted chain
  // sample would make a round's cycles look few).
  const double fastest_cycle = *std::min_element(cycle_s.begin(), cycle_s.end());
  std::printf("per 16-element vector, median (fastest):\n");
  for (size_t k = 0; k < kKernels; ++k) {
    per_vector[k] = median(cycles[k]);
    std::printf("  %-14s %6.3f ns  %5.2f cycles (%.2f)\n", kernels[k].name, median(ns[k]), per_vector[k],
                *std::min_element(ns[k].begin(), ns[k].end()) * 1e-9 / fastest_cycle);
  }
  // Per element from here on, in cycles and in ns at the median clock.
  const double clock_ns = median(cycle_s) * 1e9;
  // A training forward: statistics, then normalization (each element through both).
  const double f16_training = (per_vector[2] + per_vector[3]) / kLanes;
  const double f32_training = (per_vector[4] + per_vector[5]) / kLanes;
  std::printf("training forward (moments + normalize) per element and thread: float16 %.3f cycles (%.3f ns), "
              "float32 %.3f cycles (%.3f ns)\n",
              f16_training, f16_training * clock_ns, f32_training, f32_training * clock_ns);
  const double nchw = 32.0 * 256 * 56 * 56;
  std::printf("  e.g. 32x256x56x56 on 2 threads at this clock, arithmetic alone: "
              "float16 %.2f ms, float32 %.2f ms\n",
              f16_training * clock_ns * nchw / 2 * 1e-6, f32_training * clock_ns * nchw / 2 * 1e-6);
  return 0;
}
