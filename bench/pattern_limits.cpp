// What NCHW training's access pattern allows on this machine, measured in one process.
//
// pybn's NCHW training reads each work item from memory once (its statistics) and once more
// from L2 (its normalization, streamed out), so it moves the bytes of a copy. This program
// times, interleaved round after round (each round in a fresh order) on the same buffers:
//   copy     a streaming copy of x into y (AVX-512 loads prefetched 4 KB ahead into L2,
//            non-temporal stores), the floor;
//   memcpy   glibc's memcpy of each thread's half (run with GLIBC_TUNABLES below, it streams
//            too), for comparison: bench/cpu.py's copy floor is this, called from NumPy;
//   pattern  a plain loop with pybn's access pattern and arithmetic, nothing else: no
//            validation, no chunked moments, no moving averages, no bit-identity constraints;
//   pybn     pybn_forward (training, through the C ABI) on the same x and y.
// pattern / copy is what the pattern itself costs over the floor here; pybn / pattern is
// what pybn adds to it. The patterns pybn uses for the benchmark's NCHW shape (32,256,56,56):
//   float32, float64  items of G adjacent channels (float32: 2, float64: 1; 800 KB either way
//            at that shape) split between the two threads by outer index, each summing its
//            half of the next item while it normalizes its half of this one, in one loop (a
//            line written per line summed); the two meet once per item
//            (Forward::shared_channels; pybn reads four runs in turn there, this one run);
//   float16  items of two adjacent channels (400 KB) owned by one thread (round robin), the
//            thread's next item summed in the loop that normalizes this one (Forward::long_runs
//            with overlaps_items; item after item, statistics then normalization, until stop 31).
// Summing passes prefetch 4 KB ahead into L2 (into the next run where a run ends), as pybn's.
//
// x86-64 with AVX-512 only. From the repository root, with pybn installed:
//   lib=$(python -c "import os, pybn; print(os.path.dirname(pybn.__file__))")
//   g++ -O2 -fopenmp -mavx512f -mavx512bw -mavx512dq -mf16c -Icpp/include
//       bench/pattern_limits.cpp -o /tmp/pattern_limits -L$lib -lpybn -Wl,-rpath,$lib
//   export GLIBC_TUNABLES=glibc.cpu.x86_non_temporal_threshold=0x400000
//   /tmp/pattern_limits float32|float64|float16 [N C HW] [rounds] [G]
// (two threads for every contestant; G overrides the channels per item; the tunable, as in
// bench/cpu.py, makes memcpy stream; FLUSH_MB=1024 reads that much other memory before each
// call, so that the last-level cache holds none of x). It also times the streaming copy in
// the order of pybn's NCHW reductions, one run at a time and four in turn
// (channel_order_copy).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "limits_common.h"

namespace {

constexpr int64_t kPrefetchBytes = 4096;  // summing passes: software prefetch distance
constexpr int kItemChannels16 = 2;        // float16: adjacent channels per owned item

int64_t N = 32, C = 256, HW = 3136;

// The streaming copy of `bytes` (a multiple of 128), split in halves between the two threads.
// Its loads are prefetched as pybn's summing passes are: without that it took 9.6 ms at
// 196 MiB against 8.1 with it and 7.6 for glibc's memcpy (stop 23).
void stream_copy(const void *src, void *dst, int64_t bytes) {
#pragma omp parallel num_threads(2)
  {
    const int64_t half = bytes / 2, begin = omp_get_thread_num() * half;
    const char *in = static_cast<const char *>(src) + begin;
    char *out = static_cast<char *>(dst) + begin;
    for (int64_t i = 0; i < half; i += 64) {
      _mm_prefetch(in + std::min(i + kPrefetchBytes, half - 64), _MM_HINT_T1);
      _mm512_stream_si512(reinterpret_cast<__m512i *>(out + i), _mm512_loadu_si512(in + i));
    }
    _mm_sfence();
  }
}

// The streaming copy in the order of pybn's NCHW reductions: channel after channel, each
// thread over its half of the outer indices, `runs` runs (a channel's HW elements at one
// outer index, C * HW apart) at a time, a line of each in turn. One run at a time the
// hardware prefetcher starts over at every run; runs = 4 is for_each_run_group's order.
void channel_order_copy(const char *src, char *dst, int64_t itemsize, int runs) {
#pragma omp parallel num_threads(2)
  {
    const int64_t run_bytes = HW * itemsize, stride = C * run_bytes, half = N / 2;
    const int64_t first = omp_get_thread_num() * half;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t n = first; n < first + half; n += runs) {
        const int count = int(std::min<int64_t>(runs, first + half - n));
        const int64_t base = n * stride + c * run_bytes;
        for (int64_t i = 0; i < run_bytes; i += 64)
          for (int q = 0; q < count; ++q)
            _mm512_stream_si512(reinterpret_cast<__m512i *>(dst + base + q * stride + i),
                                _mm512_loadu_si512(src + base + q * stride + i));
      }
    _mm_sfence();
  }
}

void halves_memcpy(const void *src, void *dst, int64_t bytes) {
#pragma omp parallel num_threads(2)
  {
    const int64_t half = bytes / 2, begin = omp_get_thread_num() * half;
    std::memcpy(static_cast<char *>(dst) + begin, static_cast<const char *>(src) + begin, size_t(half));
  }
}

// ---- float32 and float64: items shared by the two threads, the next one summed alongside --
// One AVX-512 register of T, through GCC's vector extensions (arithmetic by operators).
template <class T> struct Vector {
  typedef T type __attribute__((vector_size(64)));
};

struct PartSums {
  double sum, squares;  // of x - pivot, over one thread's half of an item
};

// Items of G adjacent channels (their runs at one outer index lie end to end), each split
// between the two threads by outer index. One mean and scale per item: the arithmetic, not
// the statistics, is what is timed.
template <class T> void train_shared(const T *x, T *y, int64_t G, double eps) {
  typedef typename Vector<T>::type V;
  constexpr int L = int(64 / sizeof(T));
  const auto load = [](const T *p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  const auto total = [](V v) {
    double sum = 0.0;
    for (int l = 0; l < L; ++l) sum += double(v[l]);
    return sum;
  };
  const int64_t items = C / G, run = G * HW, count = N * run;
  const int64_t ahead = kPrefetchBytes / int64_t(sizeof(T));
  std::vector<PartSums> parts(size_t(2 * items));
#pragma omp parallel num_threads(2)
  {
    const int t = omp_get_thread_num();
    const int64_t n0 = t * (N / 2), n1 = n0 + N / 2;  // this thread's outer indices
    // Normalizes this thread's runs of item w (coefficients m, k) while summing the same runs
    // of item w + 1 into parts[2 * (w + 1) + t]; w == -1: sums only; w + 1 == items: writes only.
    auto step = [&](int64_t w, double m, double k) {
      const bool sums = w + 1 < items, writes = w >= 0;
      const V pivot = V{} + (sums ? x[(w + 1) * run] : T(0));
      const V vm = V{} + T(m), vk = V{} + T(k), shift = V{} + T(0.5);
      V s0{}, s1{}, q0{}, q1{};  // sums of x - pivot and of its square
      for (int64_t r = n0; r < n1; ++r) {
        const int64_t at = r * C * HW + w * run;  // item w's run (w == -1: not read)
        const T *in = x + std::max<int64_t>(at, 0), *next = x + at + run;
        T *out = y + std::max<int64_t>(at, 0);
        const T *after = r + 1 < n1 ? next + C * HW : next;  // the run summed after this one
        for (int64_t i = 0; i + 2 * L <= run; i += 2 * L) {
          if (sums) {
            const int64_t a = i + ahead, b = a + L;
            _mm_prefetch(reinterpret_cast<const char *>(a < run ? next + a : after + (a - run)), _MM_HINT_T1);
            _mm_prefetch(reinterpret_cast<const char *>(b < run ? next + b : after + (b - run)), _MM_HINT_T1);
            const V d0 = load(next + i) - pivot, d1 = load(next + i + L) - pivot;
            s0 += d0;
            q0 += d0 * d0;
            s1 += d1;
            q1 += d1 * d1;
          }
          if (writes)
            for (int64_t j = i; j < i + 2 * L; j += L)
              _mm512_stream_si512(reinterpret_cast<__m512i *>(out + j), (__m512i)((load(in + j) - vm) * vk + shift));
        }
      }
      if (sums) parts[size_t(2 * (w + 1) + t)] = {total(s0 + s1), total(q0 + q1)};
    };
    step(-1, 0.0, 0.0);
    for (int64_t w = 0; w < items; ++w) {
#pragma omp barrier
      const PartSums &a = parts[size_t(2 * w)], &b = parts[size_t(2 * w + 1)];
      const double shifted_mean = (a.sum + b.sum) / double(count);
      const double var = std::max(0.0, (a.squares + b.squares) / double(count) - shifted_mean * shifted_mean);
      step(w, double(x[w * run]) + shifted_mean, 1.0 / __builtin_sqrt(var + eps));
    }
    _mm_sfence();
  }
}

// ---- float16: items of G channels owned by one thread, the next one summed alongside ----
inline __m512 load_half16(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}

struct Sums16 {
  __m512 s0, s1, q0, q1;  // of x - pivot and of its square, two chains each
};

// Items w, w + 2, ... of G adjacent channels on thread w % 2: each item's runs normalized
// (coefficients from its sums) in the loop that sums the same runs of the thread's next item.
void train_float16(const uint16_t *x, uint16_t *y, int64_t G, float eps) {
  const int64_t run = G * HW, items = C / G, ahead = kPrefetchBytes / 2;
#pragma omp parallel num_threads(2)
  {
    // Normalizes item w with (vm, vk) while summing item `next` into s; w < 0: sums only;
    // next >= items: writes only.
    auto step = [&](int64_t w, __m512 vm, __m512 vk, int64_t next, Sums16 &total, __m512 pivot) {
      const __m512 shift = _mm512_set1_ps(0.5f);
      const bool sums = next < items, writes = w >= 0;
      Sums16 s = total;  // in registers: the streaming stores may alias anything in memory
      for (int64_t r = 0; r < N; ++r) {
        const uint16_t *in = x + std::max<int64_t>(w, 0) * run + r * C * HW, *nx = x + next * run + r * C * HW;
        uint16_t *out = y + std::max<int64_t>(w, 0) * run + r * C * HW;
        const uint16_t *after = r + 1 < N ? nx + C * HW : nx;
        for (int64_t i = 0; i + 32 <= run; i += 32) {
          if (sums) {
            const int64_t a = i + ahead;
            _mm_prefetch(reinterpret_cast<const char *>(a < run ? nx + a : after + (a - run)), _MM_HINT_T1);
            const __m512 d0 = _mm512_sub_ps(load_half16(nx + i), pivot), d1 = _mm512_sub_ps(load_half16(nx + i + 16), pivot);
            s.s0 = _mm512_add_ps(s.s0, d0);
            s.q0 = _mm512_fmadd_ps(d0, d0, s.q0);  // fused, as pybn's 16-bit formulas
            s.s1 = _mm512_add_ps(s.s1, d1);
            s.q1 = _mm512_fmadd_ps(d1, d1, s.q1);
          }
          if (writes) {
            const __m256i lo = _mm512_cvtps_ph(_mm512_fmadd_ps(_mm512_sub_ps(load_half16(in + i), vm), vk, shift), _MM_FROUND_TO_NEAREST_INT);
            const __m256i hi = _mm512_cvtps_ph(_mm512_fmadd_ps(_mm512_sub_ps(load_half16(in + i + 16), vm), vk, shift), _MM_FROUND_TO_NEAREST_INT);
            _mm512_stream_si512(reinterpret_cast<__m512i *>(out + i), _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
          }
        }
      }
      total = s;
    };
    const auto fresh = [] { return Sums16{_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()}; };
    const auto pivot_of = [&](int64_t w) { return _mm512_set1_ps(w < items ? _cvtsh_ss(x[w * run]) : 0.0f); };
    int64_t w = omp_get_thread_num();
    Sums16 s = fresh();
    __m512 pivot = pivot_of(w);
    step(-1, pivot, pivot, w, s, pivot);
    for (; w < items; w += 2) {
      // One mean and scale for the item's G channels: the arithmetic, not the statistics, is
      // what is timed here.
      const float count = float(N * run);
      const float shifted_mean = _mm512_reduce_add_ps(_mm512_add_ps(s.s0, s.s1)) / count;
      const float var = std::max(0.0f, _mm512_reduce_add_ps(_mm512_add_ps(s.q0, s.q1)) / count - shifted_mean * shifted_mean);
      const __m512 vm = _mm512_add_ps(pivot, _mm512_set1_ps(shifted_mean));
      const __m512 vk = _mm512_set1_ps(1.0f / __builtin_sqrtf(var + eps));
      s = fresh();
      pivot = pivot_of(w + 2);
      step(w, vm, vk, w + 2, s, pivot);
    }
    _mm_sfence();
  }
}

}  // namespace

using limits::median;

int main(int argc, char **argv) {
  limits::Arguments a{"", N, C, HW, 21, 4};
  if (!limits::parse_arguments(argc, argv, a, " [channels per item]")) return 2;
  const std::string &dtype = a.dtype;
  N = a.N;
  C = a.C;
  HW = a.HW;
  const int rounds = a.rounds, itemsize = a.itemsize;
  // pybn's items: float32 two 56x56 channels (runs under kShareRunBytes share twice the
  // channels), float64 one, float16 two (owned).
  const int64_t G = argc > 6 ? std::atol(argv[6]) : itemsize == 4 ? 2 : itemsize == 8 ? 1 : kItemChannels16;
  const int64_t elements = N * C * HW, bytes = elements * itemsize;
  if (N <= 0 || C <= 0 || HW <= 0 || G <= 0 || rounds <= 0 || N % 2 != 0 || C % (2 * G) != 0 || HW % 64 != 0) {
    std::fprintf(stderr, "needs N, C, HW, rounds and G (channels per item) positive, N even, C a multiple of 2 G, "
                         "HW a multiple of 64\n");
    return 2;
  }
  void *x = limits::huge_alloc(bytes), *y = limits::huge_alloc(bytes);
  limits::fill_around_channel_means(x, N, C, HW, itemsize);
  const limits::TrainingCall run_pybn(x, y, N, C, HW, itemsize);  // pybn on the same buffers
  auto run_pattern = [&] {
    if (itemsize == 2)
      train_float16(static_cast<const uint16_t *>(x), static_cast<uint16_t *>(y), G, 1e-3f);
    else if (itemsize == 4)
      train_shared<float>(static_cast<const float *>(x), static_cast<float *>(y), G, 1e-3);
    else
      train_shared<double>(static_cast<const double *>(x), static_cast<double *>(y), G, 1e-3);
  };
  auto run_copy = [&] { stream_copy(x, y, bytes); };
  auto run_memcpy = [&] { halves_memcpy(x, y, bytes); };
  auto run_runs1 = [&] { channel_order_copy(static_cast<const char *>(x), static_cast<char *>(y), itemsize, 1); };
  auto run_runs4 = [&] { channel_order_copy(static_cast<const char *>(x), static_cast<char *>(y), itemsize, 4); };
  // The last-level cache can hold much of a 196 MiB tensor (480 MB on our VM): with FLUSH_MB
  // set, each call comes after a read of that many MB of other memory (not timed).
  limits::CacheFlush flush;

  std::printf("%s %lldx%lldx%lld (%.1f MiB), %d rounds; pybn %s, %s build, %d threads\n", dtype.c_str(), (long long)N,
              (long long)C, (long long)HW, double(bytes) / (1 << 20), rounds, pybn_version_string(), pybn_cpu_isa(),
              pybn_cpu_num_threads());
  // copy, pattern, pybn, memcpy, runs1, runs4
  const std::vector<std::vector<double>> times = limits::time_rounds(
      {run_copy, run_pattern, [&] { run_pybn(); }, run_memcpy, run_runs1, run_runs4}, rounds, flush);
  const double copy = median(times[0]), pattern = median(times[1]), pybn = median(times[2]), glibc = median(times[3]);
  std::printf("median ms: copy %.3f  memcpy %.3f  pattern %.3f  pybn %.3f\n", copy * 1e3, glibc * 1e3, pattern * 1e3, pybn * 1e3);
  std::printf("pattern/copy %.2f  pybn/copy %.2f  pybn/memcpy %.2f  pybn/pattern %.2f\n", pattern / copy, pybn / copy,
              pybn / glibc, pybn / pattern);
  const double runs1 = median(times[4]), runs4 = median(times[5]);
  std::printf("copy in channel order: one run at a time %.3f ms (%.2fx copy), four runs in turn %.3f ms (%.2fx)\n",
              runs1 * 1e3, runs1 / copy, runs4 * 1e3, runs4 / copy);
  std::free(x);
  std::free(y);
  return 0;
}
