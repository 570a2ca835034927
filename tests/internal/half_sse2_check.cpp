// Checks the baseline build's four-lane float16 conversions (cpp/src/cpu/half_sse2.hpp) against
// the portable reference (cpp/src/types.hpp: to_float, to_half), bit for bit: every one of the
// 65536 halves one way; the other way, every float whose low mantissa bits hold one of the
// patterns where rounding turns (around bit 12, the normal halves' rounding bit, and the low
// bits) for every exponent and sign, every float of the binades of subnormal halves and of
// the overflow edge, NaN payloads, and random floats. Built by tests/test_internal_checks.py
// with the library's floating-point flags. Prints the counts; exits 1 on any difference.
#include "../../cpp/src/types.hpp"
#include "../../cpp/src/cpu/half_sse2.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

long checked = 0, wrong = 0;

// Converts the floats of `bits` four at a time (a last partial group padded with zeros) and
// compares each half with to_half's.
void check_to_half(const std::vector<uint32_t> &bits) {
  for (size_t i = 0; i < bits.size(); i += 4) {
    uint32_t group[4] = {0, 0, 0, 0};
    for (size_t l = 0; l < 4 && i + l < bits.size(); ++l) group[l] = bits[i + l];
    __m128 v;
    std::memcpy(&v, group, sizeof v);
    uint16_t got[8];
    _mm_storeu_si128(reinterpret_cast<__m128i *>(got), pybn::float4_to_half(v));
    for (size_t l = 0; l < 4 && i + l < bits.size(); ++l) {
      const uint16_t want = pybn::to_half(pybn::bits_to_float(group[l])).bits;
      ++checked;
      if (got[l] != want && ++wrong <= 10)
        std::printf("to_half differs: float bits 0x%08x: reference 0x%04x, SSE2 0x%04x\n", group[l], want, got[l]);
    }
  }
}

}  // namespace

int main() {
  // halves -> floats: all of them
  long half_checked = 0, half_wrong = 0;
  for (uint32_t h = 0; h < 65536; h += 4) {
    const uint16_t group[4] = {uint16_t(h), uint16_t(h + 1), uint16_t(h + 2), uint16_t(h + 3)};
    uint64_t packed;
    std::memcpy(&packed, group, sizeof packed);
    float got[4];
    _mm_storeu_ps(got, pybn::half4_to_float(_mm_set_epi64x(0, static_cast<long long>(packed))));
    for (int l = 0; l < 4; ++l) {
      const uint32_t want = pybn::float_to_bits(pybn::to_float(pybn::half_t{group[l]}));
      ++half_checked;
      if (pybn::float_to_bits(got[l]) != want && ++half_wrong <= 10)
        std::printf("to_float differs: half 0x%04x: reference 0x%08x, SSE2 0x%08x\n", group[l], want,
                    pybn::float_to_bits(got[l]));
    }
  }

  std::vector<uint32_t> bits;
  const auto flush = [&bits] {
    check_to_half(bits);
    bits.clear();
  };
  // Every exponent and sign, the top 10 mantissa bits all values, the low 13 bits around
  // their rounding points (0, 1, the midpoint 0x1000 and its neighbours, 0x1fff).
  const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x0800, 0x17ff};
  for (uint32_t sign = 0; sign < 2; ++sign)
    for (uint32_t exponent = 0; exponent < 256; ++exponent) {
      for (uint32_t top = 0; top < 1024; ++top)
        for (uint32_t low : lows) bits.push_back(sign << 31 | exponent << 23 | top << 13 | low);
      flush();
    }
  // Every float of the binades whose halves are subnormal or zero (2^-26 .. 2^-15), of the
  // smallest normal halves' (2^-14), and of the overflow edge (2^15), both signs.
  for (uint32_t exponent : {101u, 102u, 103u, 104u, 105u, 106u, 107u, 108u, 109u, 110u, 111u, 112u, 113u, 142u})
    for (uint32_t sign = 0; sign < 2; ++sign) {
      for (uint32_t mantissa = 0; mantissa < (1u << 23); ++mantissa)
        bits.push_back(sign << 31 | exponent << 23 | mantissa);
      flush();
    }
  // NaNs with every payload top and a few low bits; random floats.
  for (uint32_t payload = 1; payload < (1u << 23); payload += 997) {
    bits.push_back(0x7f800000u | payload);
    bits.push_back(0xff800000u | payload);
  }
  std::mt19937 rng(20261201);
  for (int i = 0; i < 4000000; ++i) bits.push_back(uint32_t(rng()));
  flush();

  std::printf("halves to floats: %ld checked, %ld differ\n", half_checked, half_wrong);
  std::printf("floats to halves: %ld checked, %ld differ\n", checked, wrong);
  const bool ok = half_wrong == 0 && wrong == 0 && half_checked == 65536;
  std::printf("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
