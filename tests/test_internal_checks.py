"""Internal numerics of the baseline SIMD build, which processors without F16C and FMA run:
C++ programs in tests/internal, built without -mfma / -mf16c (the library's own floating-point
flags) and run. Each compares its SSE2 code bit for bit with a reference and prints OK.

- fused_mul_add_check.cpp: cpp/src/cpu/fused_mul_add.hpp, the emulated fused multiply-add of
  the 16-bit formulas, against the C library's fmaf;
- half_sse2_check.cpp: cpp/src/cpu/half_sse2.hpp, four-lane float16 conversions, against
  types.hpp's scalar to_float / to_half.
"""
import pathlib
import platform
import shutil
import subprocess

import pytest

INTERNAL = pathlib.Path(__file__).resolve().parent / "internal"

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# programs of SSE2 code only (fused_mul_add_check.cpp checks the scalar form anywhere)
X86_ONLY = {"half_sse2_check.cpp"}
# program -> lines its output must contain besides the final OK
PROGRAMS = {
    "fused_mul_add_check.cpp": ["near midpoints: 600000 checked, 0 differ"],
    "half_sse2_check.cpp": ["halves to floats: 65536 checked, 0 differ",
                            "floats to halves: 243092156 checked, 0 differ"],
}


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.parametrize("source", sorted(PROGRAMS))
def test_internal_check(source, tmp_path):
    if source in X86_ONLY and not X86:
        pytest.skip(f"{source} checks SSE2 code, which only x86 builds have")
    exe = tmp_path / source.replace(".cpp", "")
    built = subprocess.run(["g++", "-O3", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                            "-fno-math-errno", "-fno-trapping-math", str(INTERNAL / source), "-o", str(exe)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().endswith("OK"), ran.stdout
    for line in PROGRAMS[source]:
        assert line in ran.stdout, ran.stdout
