// The formulas of SPEC.md, each written once. Every backend (the CPU kernels in all their
// SIMD builds, and device code through PYBN_HD) calls these; nothing else restates them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define PYBN_HD __host__ __device__
#else
#define PYBN_HD
#endif

namespace pybn {

// The two steps of the moments, written once and shared by every kernel layout (the
// per-channel Moments below and the struct-of-arrays loops of the row-layout kernels).
// Chunks of one reduction have the same count for every channel, so the reciprocal and the
// merge weight are computed once per chunk, not once per channel.

// mean and M2 from a chunk's pivot and s1 = sum(x - pivot), s2 = sum((x - pivot)^2).
PYBN_HD inline void centered_to_moments(double inv_count, double pivot, double s1, double s2, double &mean,
                                        double &m2) {
  if (!std::isfinite(pivot)) {  // an inf in the chunk: the mean is that inf (or NaN), var NaN
    mean = pivot;
    m2 = NAN;
    return;
  }
  const double offset = s1 * inv_count;
  mean = pivot + offset;
  m2 = s2 - s1 * offset;
  if (m2 < 0.0) m2 = 0.0;  // rounding only; a NaN passes through unchanged
}

// Chan's merge of (count_b, mean_b, m2_b) into (count_a, mean_a, m2_a), both counts > 0,
// weight = count_b / (count_a + count_b).
PYBN_HD inline void chan_merge(double count_a, double weight, double &mean_a, double &m2_a, double mean_b,
                               double m2_b) {
  if (!(std::isfinite(mean_a) && std::isfinite(mean_b))) {  // inf + inf = inf, inf - inf = NaN
    mean_a += mean_b;
    m2_a = NAN;
    return;
  }
  const double delta = mean_b - mean_a;
  mean_a += delta * weight;
  m2_a += m2_b + delta * delta * count_a * weight;
}

// Count, mean and sum of squared deviations (M2) of one chunk of a channel, or of several
// chunks merged. A chunk's moments come from one pass of sums of deviations from a pivot
// close to the chunk's mean (the mean of the chunk's first elements, see kernels.inc), which
// stays accurate whatever the offset |mean| / std (no E[x^2] - E[x]^2 in working precision).
// Chunks merge with Chan's formula in float64, always in chunk order, so results do not
// depend on the thread count.
struct Moments {
  double count = 0.0;
  double mean = 0.0;
  double m2 = 0.0;

  PYBN_HD static Moments from_centered_sums(double count, double pivot, double s1, double s2) {
    Moments m;
    if (count <= 0.0) return m;
    m.count = count;
    centered_to_moments(1.0 / count, pivot, s1, s2, m.mean, m.m2);
    return m;
  }

  PYBN_HD void merge(const Moments &other) {
    if (other.count == 0.0) return;
    if (count == 0.0) { *this = other; return; }
    const double total = count + other.count;
    chan_merge(count, other.count / total, mean, m2, other.mean, other.m2);
    count = total;
  }
};

struct ChannelStats {
  double mean;
  double var;  // biased (divided by M), on every backend
};

// inv_count = 1 / m.count, computed once by the caller: every channel of a call has the same
// count M, and a division per channel would cost the divider 16 cycles per 8 channels.
PYBN_HD inline ChannelStats stats_from_moments(const Moments &m, double inv_count) {
  return {m.mean, m.count > 0.0 ? m.m2 * inv_count : 0.0};
}

// 1 / sqrt(d) for finite d > 0 with multiplications only. A square root and a division each
// occupy the divider for 16 cycles per 8 doubles (AVX-512), the largest cost of a call with
// few rows and many channels (float16 32x8192 inference: 60 % of its per-channel work). The
// first guess comes from the exponent bits (d^-1/2 halves and negates the exponent; the
// constant centers the error: within 3.5 %); each Newton step y <- y * (1.5 - (d / 2) y^2)
// squares the relative error: 1.8e-3, 5e-6, 4e-11, then rounding only. The last step is
// written y + y * (0.5 - (d / 2) y^2), whose small correction term rounds better: within one
// ulp of the correctly rounded value, as 1 / std::sqrt(d) is (tests/test_forward.py checks
// the whole float64 range). Only IEEE multiplications and subtractions (no FMA contraction,
// see CMakeLists.txt): the same bits in every SIMD build, scalar or vector. A subnormal d is
// scaled by 2^200 first (its exponent bits are not its exponent), the result by 2^100 after.
PYBN_HD inline double inverse_sqrt(double d) {
  const bool tiny = d < 0x1p-1000;
  const double scaled = tiny ? d * 0x1p200 : d;
  uint64_t bits;
  std::memcpy(&bits, &scaled, sizeof bits);
  const uint64_t guess_bits = 0x5fe6eb50c7b537a9ull - (bits >> 1);
  double y;
  std::memcpy(&y, &guess_bits, sizeof y);
  const double half = 0.5 * scaled;
  for (int step = 0; step < 3; ++step) y = y * (1.5 - half * y * y);
  y = y + y * (0.5 - half * y * y);
  return tiny ? y * 0x1p100 : y;
}

// invstd = 1 / sqrt(var + eps), and 0 where var + eps == 0 (SPEC "Forward"); +inf gives 0
// and a negative sum or a NaN gives NaN, as 1 / sqrt() would. Selects, not branches: the
// loops over channels calling this vectorize.
PYBN_HD inline double invstd_from_var(double var, double eps) {
  const double d = var + eps;
  const double r = inverse_sqrt(d);
  const bool finite_positive = d > 0.0 && d <= 0x1.fffffffffffffp1023;
  return finite_positive ? r : (d == 0.0 || d > 0.0) ? 0.0 : NAN;
}

PYBN_HD inline double moving_average(double moving, double batch, double momentum) {
  return moving * momentum + batch * (1.0 - momentum);
}

// y = (x - mean_hi) * scale + shift, with scale = invstd * g and shift = beta - mean_lo * scale.
// The mean is carried as mean_hi + mean_lo (mean_hi in the compute type). x - mean_hi stays
// an explicit, exact subtraction; only the tiny mean_lo * scale term joins the shift. Folding
// the whole mean into the shift (as PyTorch does) loses ~1e-3 at |mean| = 1e4 * std in float32 (2e-3 at 5e4).
// For 16-bit types the CPU kernels round the multiply-add once (an FMA, or its exact
// emulation: cpu/fused_mul_add.hpp), float32 and float64 round the product and the sum.
template <class CT>
struct NormCoeffs {
  CT mean_hi, scale, shift;
};

// dx = dy * a + ((x - mean_hi) * b + c)  (SPEC "Backward"), with mean_lo folded into c (each
// multiply-add rounded once for 16-bit types, as y above):
//   batch statistics:  a = invstd * g, b = -invstd^3 * g * dot / M,
//                      c = -invstd * g * sum_dy / M - mean_lo * b
//   global statistics: a = invstd * g, b = c = 0 (x is not read)
template <class CT>
struct GradCoeffs {
  CT mean_hi, a, b, c;
};

// Backward sums. The kernels sum (x - mean_hi) * dy; the mean_lo part is taken out once per
// channel by with_mean_lo(), since sum((x - hi - lo) * dy) = sum((x - hi) * dy) - lo * sum(dy).
struct GradSums {
  double sum_dy = 0.0;  // sum(dy)
  double dot = 0.0;     // sum((x - mean) * dy)
  PYBN_HD void merge(const GradSums &other) { sum_dy += other.sum_dy; dot += other.dot; }
  PYBN_HD GradSums with_mean_lo(double mean_lo) const { return {sum_dy, dot - mean_lo * sum_dy}; }
};

// std::isfinite(v), from the bits (no floating-point compare).
PYBN_HD inline bool finite_bits(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

template <class CT>
PYBN_HD inline void split_mean(double mean, CT &hi, CT &lo) {
  hi = static_cast<CT>(mean);
  // Computed whatever the mean, then selected on the exponent bits: a loop over channels then
  // vectorizes (GCC keeps a branch for std::isfinite or an operation under the condition).
  const CT rest = static_cast<CT>(mean - static_cast<double>(hi));
  lo = finite_bits(mean) ? rest : CT(0);
}

template <class CT>
PYBN_HD inline NormCoeffs<CT> norm_coeffs(double mean, double invstd, double g, double beta) {
  NormCoeffs<CT> k;
  CT mean_lo;
  split_mean(mean, k.mean_hi, mean_lo);
  const double scale = invstd * g;
  k.scale = static_cast<CT>(scale);
  k.shift = static_cast<CT>(beta - double(mean_lo) * scale);
  return k;
}

template <class CT>
PYBN_HD inline GradCoeffs<CT> grad_coeffs(double mean, double invstd, double g,
                                          const GradSums &sums, double count, bool batch_stats) {
  GradCoeffs<CT> k;
  CT mean_lo;
  split_mean(mean, k.mean_hi, mean_lo);
  const double a = invstd * g;
  k.a = static_cast<CT>(a);
  if (batch_stats && count > 0) {
    const double inv_count = 1.0 / count;
    const double b = -a * invstd * invstd * sums.dot * inv_count;
    k.b = static_cast<CT>(b);
    k.c = static_cast<CT>(-a * sums.sum_dy * inv_count - double(mean_lo) * b);
  } else {
    k.b = CT(0);
    k.c = CT(0);
  }
  return k;
}

PYBN_HD inline double dgamma_value(const GradSums &sums, double invstd, bool fix_gamma) {
  return fix_gamma ? 0.0 : sums.dot * invstd;
}
PYBN_HD inline double dbeta_value(const GradSums &sums) { return sums.sum_dy; }

}  // namespace pybn
