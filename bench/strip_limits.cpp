// What a float16 2-D training forward in cache allows on this machine, measured in one process.
//
// bench/cpu.py's float16 2-D rows ((256,1024) and (32,8192), 512 KB: x and y stay in L2) are
// timed against NumPy's floors run on one thread, a read of x plus a copy of it, which move the
// bytes without converting them. pybn has to convert every element in and out (F16C) and do
// the arithmetic of the statistics and of the normalization. This program times, interleaved
// (each round in a fresh order) on the same buffers:
//   read, copy  the floors, one thread: an AVX-512 max-reduction over x, memcpy of x into y;
//   strips      a plain loop with pybn's column-strip pattern and arithmetic, nothing else:
//               strips of 64 adjacent channels, each taken down all rows twice, sums of
//               x - pivot and of its square (subtract, add, FMA: as pybn's 16-bit formulas),
//               then y = (x - mean) * scale + shift converted back; one thread and two (the
//               strips split statically). No per-channel float64 work, no pivot pass, no
//               validation, no moving averages;
//   pybn        pybn_forward (training, through the C ABI) with 1 and with 2 threads.
// strips / (read + copy) is what the pattern's arithmetic costs over the floors here;
// pybn / strips what pybn adds to it. The numbers of stop 24 are in bench/RESULTS.md.
//
// x86-64 with AVX-512 only. From the repository root, with pybn installed:
//   lib=$(python -c "import os, pybn; print(os.path.dirname(pybn.__file__))")
//   g++ -O2 -fopenmp -mavx512f -mavx512bw -mavx512dq -mf16c -Icpp/include
//       bench/strip_limits.cpp -o /tmp/strip_limits -L$lib -lpybn -Wl,-rpath,$lib
//   /tmp/strip_limits [rows channels] [rounds]      (default 256 1024, 21 rounds)
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu_tensor.h"
#include "pybn/pybn.h"

namespace {

constexpr int kStripVectors = 4;             // as pybn's kStripVectors
constexpr int kStripWidth = 16 * kStripVectors;
constexpr double kMinSampleSeconds = 2e-3;  // calls per sample are raised until one lasts this

int64_t R = 256, C = 1024;

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline __m512 load_half16(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}

float read_max(const uint16_t *x) {
  __m512i m0 = _mm512_setzero_si512(), m1 = m0;
  const int64_t n = R * C;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    m0 = _mm512_max_epu16(m0, _mm512_loadu_si512(x + i));
    m1 = _mm512_max_epu16(m1, _mm512_loadu_si512(x + i + 32));
  }
  return float(_mm512_reduce_max_epi32(_mm512_max_epu16(m0, m1)));
}

// The strip starting at channel c0 (kStripWidth channels): statistics, then normalization.
void strip(const uint16_t *x, uint16_t *y, int64_t c0) {
  __m512 pivot[kStripVectors], s[kStripVectors], q[kStripVectors];
  for (int k = 0; k < kStripVectors; ++k) {
    pivot[k] = load_half16(x + c0 + 16 * k);  // row 0 as the pivot
    s[k] = q[k] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < R; ++r)
    for (int k = 0; k < kStripVectors; ++k) {
      const __m512 d = _mm512_sub_ps(load_half16(x + r * C + c0 + 16 * k), pivot[k]);
      s[k] = _mm512_add_ps(s[k], d);
      q[k] = _mm512_fmadd_ps(d, d, q[k]);
    }
  __m512 mean[kStripVectors], scale[kStripVectors];
  const __m512 inv_count = _mm512_set1_ps(1.0f / float(R)), eps = _mm512_set1_ps(1e-3f);
  const __m512 shift = _mm512_set1_ps(0.5f);
  for (int k = 0; k < kStripVectors; ++k) {
    const __m512 m = _mm512_mul_ps(s[k], inv_count);
    const __m512 var = _mm512_max_ps(_mm512_sub_ps(_mm512_mul_ps(q[k], inv_count), _mm512_mul_ps(m, m)), _mm512_setzero_ps());
    mean[k] = _mm512_add_ps(pivot[k], m);
    scale[k] = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(_mm512_add_ps(var, eps)));
  }
  for (int64_t r = 0; r < R; ++r)
    for (int k = 0; k < kStripVectors; ++k) {
      const int64_t at = r * C + c0 + 16 * k;
      const __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(load_half16(x + at), mean[k]), scale[k], shift);
      _mm256_storeu_si256(reinterpret_cast<__m256i *>(y + at), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
}

void strips(const uint16_t *x, uint16_t *y, int threads) {
  const int64_t count = C / kStripWidth;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t w = 0; w < count; ++w) strip(x, y, w * kStripWidth);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char **argv) {
  if (argc > 2) {
    R = std::atol(argv[1]);
    C = std::atol(argv[2]);
  }
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 21;
  if (R <= 0 || C <= 0 || C % kStripWidth != 0 || (R * C) % 64 != 0 || rounds <= 0) {
    std::fprintf(stderr, "usage: %s [rows channels] [rounds]: channels a multiple of %d, rows * channels of 64\n",
                 argv[0], kStripWidth);
    return 2;
  }
  const int64_t elements = R * C;
  // On 64-byte lines; neither contestant needs it (unaligned loads and stores; pybn lines its
  // strips up with y wherever y starts).
  auto *x = static_cast<uint16_t *>(std::aligned_alloc(64, size_t(elements) * 2));
  auto *y = static_cast<uint16_t *>(std::aligned_alloc(64, size_t(elements) * 2));
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < elements; ++i) x[i] = uint16_t(_cvtss_sh(normal(rng), _MM_FROUND_TO_NEAREST_INT));
  std::memset(y, 0, size_t(elements) * 2);

  const int64_t data_shape[2] = {R, C}, channel_shape[1] = {C};
  std::vector<float> params(size_t(4 * C), 1.0f);  // gamma, beta, moving mean, moving var
  const pybn_tensor t_x = cpu_tensor(x, 2, data_shape, 16), t_y = cpu_tensor(y, 2, data_shape, 16);
  pybn_tensor t_param[4];
  for (int k = 0; k < 4; ++k) t_param[k] = cpu_tensor(params.data() + k * C, 1, channel_shape, 32);
  pybn_params p;
  pybn_params_default(&p);
  p.fix_gamma = 0;
  p.backend = PYBN_BACKEND_CPU;
  auto pybn = [&](int threads) {
    return [&, threads] {
      pybn_cpu_set_num_threads(threads);
      if (pybn_forward(&p, &t_x, &t_param[0], &t_param[1], &t_param[2], &t_param[3], &t_y, nullptr, nullptr) !=
          PYBN_SUCCESS) {
        std::fprintf(stderr, "pybn_forward: %s\n", pybn_last_error());
        std::exit(1);
      }
    };
  };
  volatile float sink = 0.0f;
  const std::vector<std::pair<std::string, std::function<void()>>> contestants = {
      {"read/1t", [&] { sink = sink + read_max(x); }},
      {"copy/1t", [&] { std::memcpy(y, x, size_t(elements) * 2); }},
      {"strips/1t", [&] { strips(x, y, 1); }},
      {"strips/2t", [&] { strips(x, y, 2); }},
      {"pybn/1t", pybn(1)},
      {"pybn/2t", pybn(2)},
  };
  const size_t n = contestants.size();
  std::vector<int> calls(n, 1);
  for (size_t j = 0; j < n; ++j) {  // calls per sample: at least kMinSampleSeconds
    for (int k = 0; k < 100; ++k) contestants[j].second();
    for (;;) {
      const double t0 = seconds();
      for (int k = 0; k < calls[j]; ++k) contestants[j].second();
      if (seconds() - t0 >= kMinSampleSeconds) break;
      calls[j] *= 2;
    }
  }
  std::printf("float16 %lldx%lld (%.0f KiB), %d rounds; pybn %s, %s build\n", (long long)R, (long long)C,
              double(elements) * 2 / 1024, rounds, pybn_version_string(), pybn_cpu_isa());
  std::vector<std::vector<double>> times(n);
  std::mt19937 shuffle(1);
  std::vector<size_t> order(n);
  for (size_t j = 0; j < n; ++j) order[j] = j;
  for (int r = 0; r < rounds; ++r) {
    std::shuffle(order.begin(), order.end(), shuffle);
    for (const size_t j : order) {
      for (int k = 0; k < calls[j] / 8 + 1; ++k) contestants[j].second();  // its own steady state first
      const double t0 = seconds();
      for (int k = 0; k < calls[j]; ++k) contestants[j].second();
      times[j].push_back((seconds() - t0) / calls[j]);
    }
  }
  std::vector<double> us(n);
  std::printf("median us per call:");
  for (size_t j = 0; j < n; ++j) {
    us[j] = median(times[j]) * 1e6;
    std::printf("  %s %.1f", contestants[j].first.c_str(), us[j]);
  }
  const double floor = us[0] + us[1];
  std::printf("\nread+copy %.1f us; strips/2t %.2fx it, pybn/2t %.2fx it, pybn/strips %.2f (1t) %.2f (2t)\n", floor,
              us[3] / floor, us[5] / floor, us[4] / us[2], us[5] / us[3]);
  std::free(x);
  std::free(y);
  return 0;
}
