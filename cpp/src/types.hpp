// Element types. 16-bit floats are stored as raw bits and computed in float32; the scalar
// conversions here are the portable reference, the SIMD builds convert whole tiles with
// F16C / AVX-512 instructions (cpu/kernels.inc), the x86-64 baseline float16 with SSE2
// (cpu/half_sse2.hpp).
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

namespace pybn {

enum class DType { f16, bf16, f32, f64 };

inline const char *dtype_name(DType t) {
  switch (t) {
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f32: return "float32";
    case DType::f64: return "float64";
  }
  return "?";
}
// gamma, beta, moving statistics, mean and invstd: float32 for 16-bit data (SPEC "Shapes and types").
inline DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

struct half_t { uint16_t bits; };
struct bfloat16_t { uint16_t bits; };

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float to_float(half_t h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t exponent = (h.bits >> 10) & 0x1fu;
  uint32_t mantissa = h.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf, nan
  if (exponent != 0) return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return bits_to_float(sign);
  // subnormal half: value = mantissa * 2^-24, exact in float
  const float magnitude = float(mantissa) * (1.0f / 16777216.0f);
  return sign ? -magnitude : magnitude;
}

// Round to nearest even, overflow to inf, NaN stays NaN (quiet).
inline half_t to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return {uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};  // nan
  if (a >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};  // rounds to >= 65520: inf
  if (a >= 0x38800000u) {                                  // normal half
    const uint32_t rounded = a + 0x0fffu + ((a >> 13) & 1u);
    return {uint16_t(sign | ((rounded - 0x38000000u) >> 13))};
  }
  // subnormal or zero: scale so that the integer part is the half mantissa, then round
  // with the FPU (nearest even), which is exact for this range.
  const float scaled = bits_to_float(a) * 16777216.0f;  // a * 2^24, < 1024
  const uint32_t m = uint32_t(std::nearbyint(scaled));
  return {uint16_t(sign | m)};
}

inline float to_float(bfloat16_t b) { return bits_to_float(uint32_t(b.bits) << 16); }

inline bfloat16_t to_bfloat16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40u)};  // quiet nan
  return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

}  // namespace pybn
