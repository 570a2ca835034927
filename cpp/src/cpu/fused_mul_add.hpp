// a * b + c in float with a single rounding (IEEE 754 fusedMultiplyAdd), the same bits in every
// build: the kernels' 16-bit formulas use it (kernels.inc, kFusedFormulas), and their results
// must not depend on which SIMD build a processor gets.
//
// Builds whose target has the instruction (the AVX2 and AVX-512 builds, compiled with -mfma;
// AArch64) use it. The others (the x86-64 baseline) compute the same correctly rounded value
// through double, without the instruction:
//  - p = a * b is exact in double (24 + 24 significant bits fit in 53);
//  - s = p + c rounded to nearest double, and its error e = (p + c) - s exactly (TwoSum);
//  - where e != 0, s is replaced by p + c rounded *to odd* (truncated toward zero, last bit
//    set): a double with at least two bits more than float keeps, rounded to odd, the side of
//    every float rounding boundary the exact sum lies on, so the final conversion to float
//    rounds as the exact sum would. (Rounding s to float directly would round twice: an exact
//    sum just off a float midpoint can land on the midpoint in double, then go the wrong way.)
// No step overflows or underflows in double for float inputs (|a * b| < 2^256, and a nonzero
// product of floats is at least 2^-298, far above double's subnormals); infinities and NaNs
// come out of the plain sum, as from the instruction (a NaN's sign and payload aside).
//
// Everything here has internal linkage (an unnamed namespace): each kernel build includes
// this header with its own ISA flags, and functions of one name with flag-dependent bodies
// must not be merged by the linker (the baseline build would then run an FMA instruction).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pybn {
namespace {

#define PYBN_FMA_INLINE inline __attribute__((always_inline))

PYBN_FMA_INLINE float fused_mul_add_emulated(float a, float b, float c) {
  const double p = double(a) * double(b);
  const double cd = c;
  const double s = p + cd;
  const double back = s - p;
  const double e = (p - (s - back)) + (cd - back);
  if (e == 0 || !std::isfinite(s)) return float(s);  // exact (or not finite): one rounding
  std::uint64_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  // s was rounded away from zero where the error points back toward zero: truncating is then
  // one step down in magnitude (s is not zero: a sum of doubles that rounds to zero is exact).
  if ((e < 0) != (s < 0)) bits -= 1;
  bits |= 1;
  double odd;
  std::memcpy(&odd, &bits, sizeof odd);
  return float(odd);
}

#if defined(__SSE2__)
// The same for four floats in SSE2 (the x86-64 baseline's vectors), without branches: two
// doubles at a time, the rounding to odd done on the bits.
PYBN_FMA_INLINE __m128d fused_mul_add_to_odd(__m128d a, __m128d b, __m128d c) {
  const __m128d p = _mm_mul_pd(a, b);
  const __m128d s = _mm_add_pd(p, c);
  const __m128d back = _mm_sub_pd(s, p);
  const __m128d e = _mm_add_pd(_mm_sub_pd(p, _mm_sub_pd(s, back)), _mm_sub_pd(c, back));
  const __m128d zero = _mm_setzero_pd();
  // 1 in the lanes where the sum was rounded and is finite (s - s is 0 only for finite s)
  const __m128i inexact = _mm_and_si128(
      _mm_castpd_si128(_mm_and_pd(_mm_cmpneq_pd(e, zero), _mm_cmpeq_pd(_mm_sub_pd(s, s), zero))),
      _mm_set1_epi64x(1));
  // 1 where, moreover, s lies farther from zero than the sum (signs of s and e differ)
  const __m128i away = _mm_and_si128(_mm_srli_epi64(_mm_castpd_si128(_mm_xor_pd(s, e)), 63), inexact);
  return _mm_castsi128_pd(_mm_or_si128(_mm_sub_epi64(_mm_castpd_si128(s), away), inexact));
}
PYBN_FMA_INLINE __m128 fused_mul_add_emulated(__m128 a, __m128 b, __m128 c) {
  const auto high = [](__m128 v) { return _mm_cvtps_pd(_mm_movehl_ps(v, v)); };
  const __m128d lo = fused_mul_add_to_odd(_mm_cvtps_pd(a), _mm_cvtps_pd(b), _mm_cvtps_pd(c));
  const __m128d hi = fused_mul_add_to_odd(high(a), high(b), high(c));
  return _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi));
}
#endif

// (__FMA__ as well: Clang defines __FP_FAST_FMAF on x86 not even with -mfma, yet compiles
// std::fma to the instruction there.)
PYBN_FMA_INLINE float fused_mul_add(float a, float b, float c) {
#if defined(__FP_FAST_FMAF) || defined(__FMA__)
  return std::fma(a, b, c);
#else
  return fused_mul_add_emulated(a, b, c);
#endif
}

#undef PYBN_FMA_INLINE

}  // namespace
}  // namespace pybn
