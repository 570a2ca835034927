// Included by the bench programs whose bare loops mimic the library's float32 and float64
// formulas: from here to the end of the file that includes it, a multiplication followed by an
// addition stays two roundings, as the library builds them (CMakeLists.txt: -ffp-contract=off),
// where GCC and Clang would otherwise fuse _mm512_add_ps(_mm512_mul_ps(...)) into one FMA.
// Explicit FMA intrinsics (the 16-bit formulas) are untouched.
#pragma once

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
