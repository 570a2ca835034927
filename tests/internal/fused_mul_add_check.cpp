// Checks pybn's float fused multiply-add emulation (cpp/src/cpu/fused_mul_add.hpp, used by the
// baseline SIMD build) against the C library's fmaf, bit for bit. Built without -mfma by
// tests/test_internal_checks.py; the library's fmaf is correctly rounded whether or not the
// processor has the instruction. Cases: random triples over wide exponent ranges, triples
// built so that a * b + c lies just off a float rounding midpoint (where rounding once to
// double, then to float, goes wrong), zeros, subnormals, overflow, infinities and NaNs.
// Prints the counts; exits 1 on any difference, or if the midpoint cases did not catch the
// naive double computation (the check would then be too weak to fail).
#include "../../cpp/src/cpu/fused_mul_add.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace {

std::uint32_t bits_of(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}

struct Tally {
  long checked = 0, wrong = 0, naive_wrong = 0, vector_checked = 0, vector_wrong = 0;
  void check(float a, float b, float c) {
    const float want = std::fma(a, b, c), got = pybn::fused_mul_add_emulated(a, b, c);
    const float naive = float(double(a) * double(b) + double(c));
    ++checked;
    const bool same = std::isnan(want) ? std::isnan(got) : bits_of(want) == bits_of(got);
    if (!same) {
      if (++wrong <= 10)
        std::printf("differs: fma(%a, %a, %a) = %a, emulated %a\n", double(a), double(b), double(c), double(want),
                    double(got));
    }
    if (!std::isnan(want) && bits_of(want) != bits_of(naive)) ++naive_wrong;
#if defined(__SSE2__)
    // The four-lane SSE2 form, the triple in lane 0 and permutations of it in the others.
    const float lanes[4][3] = {{a, b, c}, {b, c, a}, {c, a, b}, {-a, b, -c}};
    float va[4], vb[4], vc[4], vr[4];
    for (int l = 0; l < 4; ++l) va[l] = lanes[l][0], vb[l] = lanes[l][1], vc[l] = lanes[l][2];
    _mm_storeu_ps(vr, pybn::fused_mul_add_emulated(_mm_loadu_ps(va), _mm_loadu_ps(vb), _mm_loadu_ps(vc)));
    for (int l = 0; l < 4; ++l) {
      const float lane_want = std::fma(va[l], vb[l], vc[l]);
      const bool lane_same = std::isnan(lane_want) ? std::isnan(vr[l]) : bits_of(lane_want) == bits_of(vr[l]);
      ++vector_checked;
      if (!lane_same && ++vector_wrong <= 10)
        std::printf("differs in SSE2 lane %d: fma(%a, %a, %a) = %a, emulated %a\n", l, double(va[l]), double(vb[l]),
                    double(vc[l]), double(lane_want), double(vr[l]));
    }
#endif
  }
};

}  // namespace

int main() {
  std::mt19937_64 rng(20261201);
  Tally random_cases, midpoint_cases, special_cases;

  // Random significands and signs, exponents of a, b and c drawn over a range.
  std::uniform_int_distribution<std::uint32_t> mantissa(0, (1u << 23) - 1), sign(0, 1);
  for (int spread : {4, 30, 100, 300}) {
    std::uniform_int_distribution<int> exponent(-spread / 2, spread / 2);
    for (int i = 0; i < 1000000; ++i) {
      float v[3];
      for (float &x : v) {
        const float m = 1.0f + float(mantissa(rng)) * 0x1p-23f;
        x = std::ldexp(sign(rng) ? -m : m, exponent(rng));
      }
      random_cases.check(v[0], v[1], v[2]);
    }
  }

  // a * b = 2^k * (1 - 2^-46) or 2^k * (1 + 2^-j) - tiny, next to c so that the exact sum
  // lies a hair off a float midpoint of c's binade.
  for (int i = 0; i < 200000; ++i) {
    const float m = 1.0f + float(mantissa(rng) | 1u) * 0x1p-23f;  // c with an odd last bit
    const int e = std::uniform_int_distribution<int>(-100, 100)(rng);
    const float c = std::ldexp(sign(rng) ? -m : m, e);
    const float u = 1.0f + 0x1p-23f * float(1 + rng() % 7), w = 1.0f - 0x1p-23f * float(1 + rng() % 7);
    const int k = e - 24 + int(rng() % 3) - 1;  // a * b about half an ulp of c
    const float a = std::ldexp(u, k / 2), b = std::ldexp(w, k - k / 2);
    midpoint_cases.check(a, b, c);
    midpoint_cases.check(-a, b, c);
    midpoint_cases.check(a, b, -c);
  }

  // Zeros, subnormals, the largest float, infinities, NaN.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> specials = {0.0f, -0.0f, 1.0f, -1.0f, 0x1p-149f, -0x1p-149f, 0x1.fffffcp-127f, 0x1p-126f,
                                       0x1.fffffep127f, -0x1.fffffep127f, 0x1p64f, 0x1p-64f, 1.5f, 0x1.000002p0f,
                                       inf, -inf, nan};
  for (float a : specials)
    for (float b : specials)
      for (float c : specials) special_cases.check(a, b, c);

  bool ok = midpoint_cases.naive_wrong > 0;
  for (const auto &[name, t] : {std::pair<const char *, const Tally &>{"random", random_cases},
                                {"near midpoints", midpoint_cases}, {"special values", special_cases}}) {
    std::printf("%s: %ld checked, %ld differ (naive double: %ld); SSE2 lanes: %ld checked, %ld differ\n", name,
                t.checked, t.wrong, t.naive_wrong, t.vector_checked, t.vector_wrong);
    ok = ok && t.wrong == 0 && t.vector_wrong == 0;
  }
  std::printf("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
