// float16 <-> float32 for four lanes in SSE2, for the x86-64 baseline build, whose processors
// may lack F16C: the same bits as types.hpp's to_float / to_half (the portable reference, which
// the scalar heads and tails keep using), without a branch per element. Stop 35, float16
// 32x64x56x56, the baseline build with the emulated FMA against stop 34's library: 1.46-1.68x
// its time with lane-by-lane conversions, 0.96-1.11x with these (bench/RESULTS_stop35_ab.txt;
// still 29-79x a copy, for the emulated FMA and the 4-lane arithmetic).
//
// Internal linkage, as fused_mul_add.hpp: included by each kernel build with its own flags.
#pragma once

#if defined(__SSE2__)
#include <emmintrin.h>

#include <cstdint>

namespace pybn {
namespace {

#define PYBN_HALF_INLINE inline __attribute__((always_inline))

// Four halves (the low 64 bits of h, in memory order) to four floats.
PYBN_HALF_INLINE __m128 half4_to_float(__m128i h) {
  const __m128i wide = _mm_unpacklo_epi16(h, _mm_setzero_si128());
  const __m128i sign = _mm_slli_epi32(_mm_and_si128(wide, _mm_set1_epi32(0x8000)), 16);
  const __m128i magnitude = _mm_and_si128(wide, _mm_set1_epi32(0x7fff));
  // Normal halves: exponent rebiased by 127 - 15 = 112, the mantissa moved up 13 bits;
  // infinities and NaNs (exponent 31) rebiased by 112 more, to float's 255.
  const __m128i inf_or_nan = _mm_cmpgt_epi32(magnitude, _mm_set1_epi32(0x7bff));
  const __m128i rebias = _mm_add_epi32(_mm_set1_epi32(112 << 23), _mm_and_si128(inf_or_nan, _mm_set1_epi32(112 << 23)));
  const __m128i normal = _mm_add_epi32(_mm_slli_epi32(magnitude, 13), rebias);
  // Subnormal halves and zeros: mantissa * 2^-24, exact (an integer conversion, then a
  // multiplication with a normal result: no denormal operand anywhere).
  const __m128i subnormal = _mm_castps_si128(_mm_mul_ps(_mm_cvtepi32_ps(magnitude), _mm_set1_ps(1.0f / 16777216.0f)));
  const __m128i is_subnormal = _mm_cmplt_epi32(magnitude, _mm_set1_epi32(0x0400));
  const __m128i bits = _mm_or_si128(_mm_and_si128(is_subnormal, subnormal), _mm_andnot_si128(is_subnormal, normal));
  return _mm_castsi128_ps(_mm_or_si128(bits, sign));
}

// Four floats to four halves (the low 64 bits of the result), rounded to nearest even.
PYBN_HALF_INLINE __m128i float4_to_half(__m128 f) {
  const __m128i u = _mm_castps_si128(f);
  const __m128i sign = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(0x8000));
  const __m128i a = _mm_and_si128(u, _mm_set1_epi32(0x7fffffff));
  // Subnormal halves and zeros: a * 2^24 rounded to an integer by the FPU (nearest even in
  // the default rounding mode, as std::nearbyint in to_half). The lanes of larger a are
  // zeroed first: they would raise the invalid and overflow flags, as to_half does not.
  const __m128i is_normal = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x387fffff));
  const __m128 small = _mm_castsi128_ps(_mm_andnot_si128(is_normal, a));
  __m128i r = _mm_cvtps_epi32(_mm_mul_ps(small, _mm_set1_ps(16777216.0f)));
  // Normal halves: round the 13 bits that go, ties to even, and rebias.
  const __m128i odd = _mm_and_si128(_mm_srli_epi32(a, 13), _mm_set1_epi32(1));
  const __m128i rounded = _mm_add_epi32(_mm_add_epi32(a, _mm_set1_epi32(0x0fff)), odd);
  const __m128i normal = _mm_srli_epi32(_mm_sub_epi32(rounded, _mm_set1_epi32(0x38000000)), 13);
  const auto take = [&r](__m128i where, __m128i value) {
    r = _mm_or_si128(_mm_and_si128(where, value), _mm_andnot_si128(where, r));
  };
  take(is_normal, normal);
  take(_mm_cmpgt_epi32(a, _mm_set1_epi32(0x477fefff)), _mm_set1_epi32(0x7c00));  // rounds to >= 65520: inf
  const __m128i nan = _mm_or_si128(_mm_set1_epi32(0x7e00), _mm_and_si128(_mm_srli_epi32(a, 13), _mm_set1_epi32(0x3ff)));
  take(_mm_cmpgt_epi32(a, _mm_set1_epi32(0x7f800000)), nan);
  // 16-bit lanes: sign-extended so that the signed saturating pack keeps every bit pattern
  const __m128i halves = _mm_srai_epi32(_mm_slli_epi32(_mm_or_si128(r, sign), 16), 16);
  return _mm_packs_epi32(halves, halves);
}

#undef PYBN_HALF_INLINE

}  // namespace
}  // namespace pybn
#endif
