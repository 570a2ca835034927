// What the row layout's access pattern allows on this machine (short maps such as 7x7 and
// 14x14 in many rows: 64x2048x7x7), measured in one process against pybn's training forward.
//
// pybn's row layout sees an (N, C, HW) tensor as N rows of C * HW contiguous positions and
// cuts each row into blocks of adjacent channels, about 4 KB of every row (block_positions:
// 1024 float32, 512 float64, 2048 float16 positions at most, whole channels, block counts a
// multiple of 4, then fitted to whole 64-byte lines where rows are: 16 float32 7x7 maps). A
// thread owns a range of blocks (and takes the other's last ones once its own are done); for
// each it sums the block's N row pieces from memory (the statistics), then normalizes them
// from L2 with streaming stores; for 4- and 8-byte maps it sums block b + 1 while it
// normalizes block b (Forward::normalizes_alongside). This program times, round after round
// in a fresh order, on the same buffers (two threads each):
//   copy         a streaming copy of x into y in memory order (loads prefetched 4 KB ahead);
//   read         a read of x in memory order (the statistics' traffic alone);
//   phases       the fused pattern, memory traffic only: per block, a float32 sum of its row
//                pieces (the next row's piece prefetched into L2), then each piece streamed
//                out scaled (one multiplication a vector, whatever the dtype);
//   interleaved  the same, but row by row: block b + 1's piece summed, then block b's written;
//   arith        (float32 and float16, rows of whole lines) phases with pybn's arithmetic: per
//                position, sums of x - origin and of its square in L1 arrays, four rows a
//                sweep (the next sweep's rows prefetched a line at a time), then
//                y = (x - mean) * scale + shift from per-position arrays; float16 widened to
//                float32 and narrowed back (pybn's schedule for 16-bit types);
//   alongside    the same arithmetic with block b's rows normalized line by line inside the
//                sweeps of block b + 1's sums: pybn's schedule for float32 (for float16 one it
//                does not use);
//   pybn         pybn_forward (training, through the C ABI) on the same x and y.
// phases / copy is what the pattern costs over a copy on this machine, arith / phases what its
// arithmetic adds, pybn / arith (float16) and pybn / alongside (float32) the rest of pybn
// (pivot rows, float64 flushes and moments, per-channel work, coefficient arrays, the
// end-of-call barrier).
//
// x86-64 with AVX-512 only. From the repository root, with pybn installed:
//   lib=$(python -c "import os, pybn; print(os.path.dirname(pybn.__file__))")
//   g++ -O2 -fopenmp -mavx512f -mavx512bw -mavx512dq -mf16c -Icpp/include
//       bench/row_limits.cpp -o /tmp/row_limits -L$lib -lpybn -Wl,-rpath,$lib
//   /tmp/row_limits float32|float64|float16 [N C HW] [rounds]
// (defaults 64 2048 49 and 21 rounds; FLUSH_MB=1024 reads that much other memory before each
// call, so that the last-level cache holds none of x).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "limits_common.h"
#include "no_contraction.h"  // float32 kept to two roundings, as the library

namespace {

constexpr int64_t kBlockRowBytes = 4096;  // a block's piece of a row, at most (block_positions)
constexpr int64_t kBlockMultiple = 4;     // block counts are multiples of this (RowLayout)
constexpr int64_t kPrefetchBytes = 4096;  // the copy's and the read's prefetch distance

// The blocks of RowLayout for rows of `channels` channels of `inner` positions.
struct Blocks {
  int64_t count, channels;  // channels per block (the last may have fewer)
  Blocks(int64_t C, int64_t inner, int64_t itemsize) {
    const int64_t widest = std::max<int64_t>(1, std::min(C, kBlockRowBytes / itemsize / inner));
    count = (C + widest - 1) / widest;
    if (count > 1) count = (count + kBlockMultiple - 1) / kBlockMultiple * kBlockMultiple;
    channels = std::max<int64_t>(1, (C + count - 1) / count);
    // Fitted to whole lines where rows are (LineGrid in kernels.inc; these buffers start on
    // lines, so no block is shifted): a whole number of the fewest channels that fill lines.
    const int64_t channel_bytes = inner * itemsize;
    if (count > 1 && C * channel_bytes % 64 == 0) {
      const int64_t period = 64 / std::gcd<int64_t>(channel_bytes, 64);
      const int64_t up = (channels + period - 1) / period * period;
      const int64_t fitted = up <= widest ? up : channels / period * period;
      if (period > 1 && fitted > 0) channels = fitted;
    }
    count = (C + channels - 1) / channels;
  }
};

// The whole 64-byte lines of [begin, end): streaming stores need line-aligned addresses; the
// partial lines at the ends (a few bytes of each 4 KB piece) are left out of the patterns.
inline void whole_lines(int64_t begin, int64_t end, int64_t &first, int64_t &last) {
  first = (begin + 63) / 64 * 64;
  last = std::max(first, end / 64 * 64);
}

inline __m512 sum_piece(const char *x, int64_t first, int64_t last, __m512 acc) {
  for (int64_t i = first; i < last; i += 64) acc = _mm512_add_ps(acc, _mm512_load_ps(x + i));
  return acc;
}

inline void prefetch_piece(const char *x, int64_t first, int64_t last) {
  for (int64_t i = first; i < last; i += 64) _mm_prefetch(x + i, _MM_HINT_T1);
}

inline void write_piece(const char *x, char *y, int64_t first, int64_t last, __m512 scale) {
  for (int64_t i = first; i < last; i += 64)
    _mm512_stream_ps(reinterpret_cast<float *>(y + i), _mm512_mul_ps(scale, _mm512_load_ps(x + i)));
}

struct Geometry {
  int64_t rows, row_bytes, block_bytes, blocks;
  // Line-aligned byte range of block b's piece of row r, from the start of the buffer.
  void piece(int64_t r, int64_t b, int64_t &first, int64_t &last) const {
    const int64_t begin = r * row_bytes + b * block_bytes;
    whole_lines(begin, std::min(begin + block_bytes, (r + 1) * row_bytes), first, last);
  }
};

volatile float sink = 0.0f;

// pybn's arithmetic for the row layout in its simplest form (add_rows_terms with CenteredTerms,
// normalize_block_rows; no pivot pass, no float64 flushes, fixed origins and coefficients),
// per element type. sum(): rows k < R of a sweep at byte i past `first` add x - origin and
// its square to the per-position partial sums (loaded and stored once for the R rows; taken
// as zeros when fresh). write_line(): the 64-byte line at byte i of R rows,
// y = (x - mean) * scale + shift, streamed.

// (x - mean) * scale + shift of the 16 elements at p, A's load widening them to float32.
template <class A> __m512 normalized(const char *p, const float *m, const float *s, const float *h) {
  const __m512 centered = _mm512_sub_ps(A::load(p), _mm512_load_ps(m));
  return A::mul_add(centered, _mm512_load_ps(s), _mm512_load_ps(h));
}
struct Float32Arith {
  static constexpr int64_t kItem = 4, kSumBytes = 64;  // bytes summed per step
  static __m512 load(const char *p) { return _mm512_load_ps(reinterpret_cast<const float *>(p)); }
  static __m512 mul_add(__m512 a, __m512 b, __m512 c) { return _mm512_add_ps(_mm512_mul_ps(a, b), c); }
  static void stream_line(char *p, const char *in, const float *m, const float *s, const float *h) {
    _mm512_stream_ps(reinterpret_cast<float *>(p), normalized<Float32Arith>(in, m, s, h));
  }
};

// (Zero-masked forms with every lane set: the plain instructions, without GCC 12's false
// "may be used uninitialized" warnings from the intrinsics' undefined sources.)
struct Float16Arith {  // widened to float32 for the arithmetic, narrowed back two vectors a line
  static constexpr int64_t kItem = 2, kSumBytes = 32;
  // fused, as pybn's 16-bit formulas (kFusedFormulas)
  static __m512 mul_add(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
  static __m512 load(const char *p) {
    return _mm512_maskz_cvtph_ps(__mmask16(0xffff), _mm256_load_si256(reinterpret_cast<const __m256i *>(p)));
  }
  typedef long long Halves __attribute__((vector_size(32)));  // 16 float16 values
  static Halves narrow(__m512 v) {
    return (Halves)_mm512_maskz_cvtps_ph(__mmask16(0xffff), v, _MM_FROUND_TO_NEAREST_INT);
  }
  static void stream_line(char *p, const char *in, const float *m, const float *s, const float *h) {
    const Halves lo = narrow(normalized<Float16Arith>(in, m, s, h));
    const Halves hi = narrow(normalized<Float16Arith>(in + 32, m + 16, s + 16, h + 16));
    // The two halves joined by one shuffle, streamed as one line.
    _mm512_stream_si512(reinterpret_cast<__m512i *>(p), (__m512i)__builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7));
  }
};

template <class A, int R> struct ArithRows {
  static constexpr int64_t kPositions = kBlockRowBytes / A::kItem;
  alignas(64) float a[kPositions], b[kPositions], origin[kPositions], mean[kPositions], scale[kPositions],
      shift[kPositions];
  ArithRows() {
    for (int64_t q = 0; q < kPositions; ++q) {
      origin[q] = mean[q] = 0.5f;
      scale[q] = 1.1f;
      shift[q] = 0.1f;
    }
  }
  void sum(const Geometry &g, const char *x, int64_t first, int64_t i, bool fresh) {
    const int64_t q = i / A::kItem;
    __m512 va = fresh ? _mm512_setzero_ps() : _mm512_load_ps(a + q);
    __m512 vb = fresh ? _mm512_setzero_ps() : _mm512_load_ps(b + q);
    const __m512 o = _mm512_load_ps(origin + q);
    for (int k = 0; k < R; ++k) {
      const __m512 d = _mm512_sub_ps(A::load(x + first + k * g.row_bytes + i), o);
      va = _mm512_add_ps(va, d);
      vb = A::mul_add(d, d, vb);
    }
    _mm512_store_ps(a + q, va);
    _mm512_store_ps(b + q, vb);
  }
  void write_line(const Geometry &g, const char *x, char *y, int64_t first, int64_t i) const {
    const int64_t q = i / A::kItem;
    for (int k = 0; k < R; ++k) {
      const int64_t at = first + k * g.row_bytes + i;
      A::stream_line(y + at, x + at, mean + q, scale + q, shift + q);
    }
  }
};

// A thread's range of blocks with pybn's arithmetic, four rows a sweep, the next sweep's rows
// prefetched a line per line read (as sweep_rows does). Phases: a block's statistics, then its
// rows normalized (a remainder of fewer than four rows left out). Alongside
// (Forward::normalizes_alongside): block b's rows normalized line by line within the sweeps
// of block b + 1's statistics.
template <class A> void arith_pattern(const Geometry &g, const char *x, char *y, bool alongside) {
  constexpr int R = 4;
  constexpr int64_t kFlush = 32;  // rows between float64 flushes: the first sweep after one is fresh
#pragma omp parallel num_threads(2)
  {
    const int t = omp_get_thread_num();
    const int64_t b0 = g.blocks * t / 2, b1 = g.blocks * (t + 1) / 2;
    ArithRows<A, R> rows;
    int64_t first, last, written_first = 0, written_last = 0;
    const auto write_block = [&](int64_t block) {
      for (int64_t r = 0; r + R <= g.rows; r += R) {
        g.piece(r, block, first, last);
        for (int64_t i = 0; i < last - first; i += 64) rows.write_line(g, x, y, first, i);
      }
    };
    for (int64_t block = b0; block < b1; ++block) {
      const bool writes = alongside && block > b0;  // block - 1's rows, within these sweeps
      for (int64_t r = 0; r + R <= g.rows; r += R) {
        g.piece(r, block, first, last);
        if (writes) g.piece(r, block - 1, written_first, written_last);
        const int64_t next = r + 2 * R <= g.rows ? first + R * g.row_bytes : -1;  // the next sweep's rows
        const int64_t n = last - first, n_written = writes ? written_last - written_first : 0;
        for (int64_t i = 0; i < std::max(n, n_written); i += A::kSumBytes) {
          if (i < n_written && i % 64 == 0) rows.write_line(g, x, y, written_first, i);
          if (i < n) {
            if (next >= 0 && i % 64 == 0)
              for (int k = 0; k < R; ++k) _mm_prefetch(x + next + k * g.row_bytes + i, _MM_HINT_T1);
            rows.sum(g, x, first, i, r % kFlush == 0);
          }
        }
      }
      if (!alongside) write_block(block);
    }
    if (alongside && b0 < b1) write_block(b1 - 1);
    _mm_sfence();
    if (rows.a[1] == 12345.0f) sink = rows.b[1];  // keeps the sums
  }
}

// Both patterns: a thread's range of blocks, as the fused row layout splits them.
void row_pattern(const Geometry &g, const char *x, char *y, bool interleaved) {
#pragma omp parallel num_threads(2)
  {
    const int t = omp_get_thread_num();
    const int64_t b0 = g.blocks * t / 2, b1 = g.blocks * (t + 1) / 2;
    const __m512 scale = _mm512_set1_ps(1.001f);
    __m512 acc = _mm512_setzero_ps();
    int64_t first, last, next_first, next_last;
    const auto sum_block = [&](int64_t b) {
      for (int64_t r = 0; r < g.rows; ++r) {
        if (r + 1 < g.rows) {
          g.piece(r + 1, b, next_first, next_last);
          prefetch_piece(x, next_first, next_last);
        }
        g.piece(r, b, first, last);
        acc = sum_piece(x, first, last, acc);
      }
    };
    if (interleaved && b0 < b1) sum_block(b0);
    for (int64_t b = b0; b < b1; ++b) {
      if (!interleaved) sum_block(b);
      for (int64_t r = 0; r < g.rows; ++r) {
        if (interleaved && b + 1 < b1) {
          if (r + 1 < g.rows) {
            g.piece(r + 1, b + 1, next_first, next_last);
            prefetch_piece(x, next_first, next_last);
          }
          g.piece(r, b + 1, first, last);
          acc = sum_piece(x, first, last, acc);
        }
        g.piece(r, b, first, last);
        write_piece(x, y, first, last, scale);
      }
    }
    _mm_sfence();
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc);
    if (lanes[0] == 12345.0f) sink = lanes[1];  // keeps the sums
  }
}

void stream_copy(const char *x, char *y, int64_t bytes) {
#pragma omp parallel num_threads(2)
  {
    const int64_t half = bytes / 2 / 64 * 64, begin = omp_get_thread_num() * half;
    const int64_t end = omp_get_thread_num() == 1 ? bytes / 64 * 64 : half;
    for (int64_t i = begin; i < end; i += 64) {
      _mm_prefetch(x + std::min(i + kPrefetchBytes, end - 64), _MM_HINT_T1);
      _mm512_stream_si512(reinterpret_cast<__m512i *>(y + i), _mm512_load_si512(x + i));
    }
    _mm_sfence();
  }
}

void read_all(const char *x, int64_t bytes) {
#pragma omp parallel num_threads(2)
  {
    const int64_t half = bytes / 2 / 64 * 64, begin = omp_get_thread_num() * half;
    const int64_t end = omp_get_thread_num() == 1 ? bytes / 64 * 64 : half;
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    int64_t i = begin;
    for (; i + 128 <= end; i += 128) {
      _mm_prefetch(x + std::min(i + kPrefetchBytes, end - 64), _MM_HINT_T1);
      a = _mm512_add_ps(a, _mm512_load_ps(x + i));
      b = _mm512_add_ps(b, _mm512_load_ps(x + i + 64));
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, _mm512_add_ps(a, b));
    if (lanes[0] == 12345.0f) sink = lanes[1];
  }
}

}  // namespace

int main(int argc, char **argv) {
  limits::Arguments a{"", 64, 2048, 49, 21, 4};  // defaults: float32 64x2048x7x7
  if (!limits::parse_arguments(argc, argv, a, "")) return 2;
  const std::string &dtype = a.dtype;
  const int64_t N = a.N, C = a.C, HW = a.HW;
  const int rounds = a.rounds, itemsize = a.itemsize;
  if (N <= 0 || C <= 0 || HW <= 0 || rounds <= 0) {
    std::fprintf(stderr, "needs N, C, HW and rounds positive\n");
    return 2;
  }
  const Blocks blocks(C, HW, itemsize);
  const int64_t elements = N * C * HW, bytes = elements * itemsize;
  const Geometry geometry{N, C * HW * itemsize, blocks.channels * HW * itemsize, blocks.count};
  char *const x = static_cast<char *>(limits::huge_alloc(bytes)), *const y = static_cast<char *>(limits::huge_alloc(bytes));
  limits::fill_around_channel_means(x, N, C, HW, itemsize);
  const limits::TrainingCall run_pybn(x, y, N, C, HW, itemsize);  // pybn on the same buffers
  limits::CacheFlush flush;  // FLUSH_MB

  std::printf("%s %lldx%lldx%lld (%.1f MiB): %lld blocks of %lld channels (%lld bytes a row), %d rounds; pybn %s, %s build, "
              "%d threads\n",
              dtype.c_str(), (long long)N, (long long)C, (long long)HW, double(bytes) / (1 << 20), (long long)blocks.count,
              (long long)blocks.channels, (long long)geometry.block_bytes, rounds, pybn_version_string(), pybn_cpu_isa(),
              pybn_cpu_num_threads());
  // The arithmetic contestants are float32's and float16's, for rows of whole 64-byte lines
  // (as pybn's alongside loop: every row piece of a block then starts on a line, for the
  // aligned loads and the streaming stores) and channels of at most kBlockRowBytes (the
  // per-position arrays).
  const bool arith = (itemsize == 4 || (itemsize == 2 && dtype == "float16")) && geometry.row_bytes % 64 == 0 &&
                     geometry.block_bytes <= kBlockRowBytes;
  std::vector<const char *> names = {"copy", "read", "phases", "interleaved", "pybn"};
  std::vector<std::function<void()>> contestants = {
      [&] { stream_copy(x, y, bytes); }, [&] { read_all(x, bytes); }, [&] { row_pattern(geometry, x, y, false); },
      [&] { row_pattern(geometry, x, y, true); }, [&] { run_pybn(); }};
  if (arith) {
    const auto pattern = itemsize == 4 ? arith_pattern<Float32Arith> : arith_pattern<Float16Arith>;
    names.push_back("arith");
    contestants.push_back([&, pattern] { pattern(geometry, x, y, false); });
    names.push_back("alongside");
    contestants.push_back([&, pattern] { pattern(geometry, x, y, true); });
  }
  const std::vector<std::vector<double>> times = limits::time_rounds(contestants, rounds, flush);
  std::vector<double> m;
  std::printf("median ms:");
  for (size_t j = 0; j < times.size(); ++j) {
    m.push_back(limits::median(times[j]));
    std::printf("  %s %.3f", names[j], m[j] * 1e3);
  }
  std::printf("\nread/copy %.2f  phases/copy %.2f  interleaved/copy %.2f  pybn/copy %.2f  pybn/phases %.2f\n", m[1] / m[0],
              m[2] / m[0], m[3] / m[0], m[4] / m[0], m[4] / m[2]);
  if (arith)
    std::printf("arith/copy %.2f  alongside/copy %.2f  arith/phases %.2f  alongside/interleaved %.2f  pybn/arith %.2f  "
                "pybn/alongside %.2f\n",
                m[5] / m[0], m[6] / m[0], m[5] / m[2], m[6] / m[3], m[4] / m[5], m[4] / m[6]);
  std::free(x);
  std::free(y);
  return 0;
}
