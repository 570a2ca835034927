// Two costs of where stores lie within a 4 KB page, measured without pybn (bench/RESULTS.md,
// "Stop 41"). Loads and stores are matched first on the low 12 bits of their addresses; the
// two loops below are the patterns of pybn's kernels that ran into it on a Zen 3 VM.
//
//   g++ -O2 -mavx2 -mfma bench/page_alias.cpp -o /tmp/page_alias
//   /tmp/page_alias [MiB] [repeats]          (defaults: 24 MiB, 20 repeats; one thread)
//
// streams: y = 1.5 x + 0.25 over MiB of float32 with streaming stores, the buffer cut into R
//   parts written side by side a vector at a time (the row layout writes R rows of a block so).
//   "page" puts the parts a multiple of 4 KB apart, "line" 64 bytes more than that each, "lines"
//   128 bytes more (Zen 3: four streams 7-13x one stream's time as "page", 3-5x as "line", even
//   as "lines").
// strips: the same arithmetic in cache over 256 rows of 4 KB (1 MiB), with the output `apart`
//   bytes past x in the page: down the rows in strips of four 32-byte vectors (pybn's 2-D
//   strips), or in memory order.
// lag: y = 1.5 x + 0.25 with streaming stores over MiB, reading the same 392 KB of x (in L2)
//   for each 392 KB of y, the output `apart` bytes past x in the page: a vector loaded, then
//   stored ("one by one"), or four loaded before the four are stored ("blocks of four", as
//   pybn's streamed runs do). One by one, each load follows the store that covers the same low
//   12 address bits where the output lies up to a vector past x.
// Each line prints the median of the repeats in milliseconds (streams, lag) or microseconds
// (strips).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

char *page_buffer(size_t bytes) {
  const size_t size = (bytes + 8192 + 4095) / 4096 * 4096;
  char *p = static_cast<char *>(std::aligned_alloc(4096, size));
  if (p == nullptr) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(1);
  }
  std::memset(p, 0, size);
  return p;
}

template <class Fn> double median_of(int repeats, Fn &&fn) {
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const double start = now();
    fn();
    times.push_back(now() - start);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// R parts of `part` floats each, `gap` floats between the starts of consecutive parts.
template <int R>
__attribute__((noinline)) void streams(const float *x, float *y, int64_t part, int64_t gap) {
  const __m256 a = _mm256_set1_ps(1.5f), b = _mm256_set1_ps(0.25f);
  for (int64_t i = 0; i < part; i += 8)
    for (int k = 0; k < R; ++k)
      _mm256_stream_ps(y + k * gap + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + k * gap + i), a, b));
  _mm_sfence();
}

constexpr int kRows = 256, kRow = 1024;  // floats: rows of 4 KB

__attribute__((noinline)) void strips(const float *x, float *y) {
  const __m256 a = _mm256_set1_ps(1.5f), b = _mm256_set1_ps(0.25f);
  for (int s = 0; s < kRow; s += 32)
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < 4; ++v) {
        const int64_t i = int64_t(r) * kRow + s + 8 * v;
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), a, b));
      }
}

__attribute__((noinline)) void memory_order(const float *x, float *y) {
  const __m256 a = _mm256_set1_ps(1.5f), b = _mm256_set1_ps(0.25f);
  for (int64_t i = 0; i < int64_t(kRows) * kRow; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), a, b));
}

template <int Block>
__attribute__((noinline)) void lagged(const float *x, float *y, int64_t n) {
  const __m256 a = _mm256_set1_ps(1.5f), b = _mm256_set1_ps(0.25f);
  for (int64_t i = 0; i + 8 * Block <= n; i += 8 * Block) {
    __m256 v[Block];  // in registers: unrolled (-O2 would keep the loops, and v on the stack)
#pragma GCC unroll 4
    for (int k = 0; k < Block; ++k) v[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * k), a, b);
#pragma GCC unroll 4
    for (int k = 0; k < Block; ++k) _mm256_stream_ps(y + i + 8 * k, v[k]);
  }
}

// y over `total` bytes from its start, `n` floats at a time from the same x.
template <int Block> void lag_pass(const float *x, char *y, int64_t n, int64_t total) {
  const int64_t step = (n * 4 + 4095) / 4096 * 4096;
  for (int64_t at = 0; at + step <= total; at += step) lagged<Block>(x, reinterpret_cast<float *>(y + at), n);
  _mm_sfence();
}

}  // namespace

int main(int argc, char **argv) {
  const int64_t mib = argc > 1 ? std::atoll(argv[1]) : 24;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 20;
  if (mib < 1 || repeats < 1) {
    std::fprintf(stderr, "usage: %s [MiB >= 1] [repeats >= 1]\n", argv[0]);
    return 2;
  }
  const size_t bytes = size_t(mib) << 20;
  const float *x = reinterpret_cast<const float *>(page_buffer(bytes));
  float *y = reinterpret_cast<float *>(page_buffer(bytes));
  const int64_t count = int64_t(bytes / 4);

  // Parts a whole number of pages long (the gap) or a line longer; `part` floats written in each.
  const auto run_streams = [&](auto parts, const char *name) {
    constexpr int R = decltype(parts)::value;
    const int64_t page_gap = count / R / 1024 * 1024 - 1024;
    const int64_t part = page_gap - 32 * R;
    const double paged = median_of(repeats, [&] { streams<R>(x, y, part, page_gap); });
    const double line = median_of(repeats, [&] { streams<R>(x, y, part, page_gap + 16); });
    const double lines = median_of(repeats, [&] { streams<R>(x, y, part, page_gap + 32); });
    std::printf("streams %-8s R=%d: page median %.3f ms, line median %.3f ms, lines median %.3f ms\n", name, R,
                paged * 1e3, line * 1e3, lines * 1e3);
  };
  run_streams(std::integral_constant<int, 1>(), "one");
  run_streams(std::integral_constant<int, 2>(), "two");
  run_streams(std::integral_constant<int, 4>(), "four");

  for (const int apart : {0, 16, 48, 1024, 4080}) {
    float *out = reinterpret_cast<float *>(reinterpret_cast<char *>(y) + apart);
    const double by_strips = median_of(repeats * 10, [&] { strips(x, out); });
    const double in_order = median_of(repeats * 10, [&] { memory_order(x, out); });
    std::printf("strips  apart %4d: strips median %.1f us, memory order median %.1f us\n", apart, by_strips * 1e6,
                in_order * 1e6);
  }

  // x shifted back in its page, so that the streamed y stays on 32-byte boundaries (x holds at
  // least 1 MiB + 8 KB: kLagFloats from up to 4 KB in).
  constexpr int64_t kLagFloats = 98 * 1024;  // 392 KB
  const char *x_bytes = reinterpret_cast<const char *>(x);
  for (const int apart : {0, 16, 48, 128, 4080}) {
    const float *in = reinterpret_cast<const float *>(x_bytes + (4096 - apart) % 4096);
    char *out = reinterpret_cast<char *>(y);
    const double single = median_of(repeats, [&] { lag_pass<1>(in, out, kLagFloats, int64_t(bytes)); });
    const double blocks = median_of(repeats, [&] { lag_pass<4>(in, out, kLagFloats, int64_t(bytes)); });
    std::printf("lag     apart %4d: one by one median %.3f ms, blocks of four median %.3f ms\n", apart, single * 1e3,
                blocks * 1e3);
  }
  return 0;
}
