"""The baseline build's emulation of the fused multiply-add (cpp/src/cpu/fused_mul_add.hpp),
which gives pybn's 16-bit formulas the FMA instruction's bits on processors without one: built
without -mfma and checked bit for bit against the C library's fmaf (tests/internal)."""
import pathlib
import shutil
import subprocess

import pytest

SOURCE = pathlib.Path(__file__).resolve().parent / "internal" / "fused_mul_add_check.cpp"


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_emulated_fma_matches_fmaf(tmp_path):
    exe = tmp_path / "fused_mul_add_check"
    # the library's own floating-point flags (CMakeLists.txt), none that adds FMA
    built = subprocess.run(["g++", "-O3", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                            "-fno-math-errno", "-fno-trapping-math", str(SOURCE), "-o", str(exe)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().endswith("OK"), ran.stdout
    assert "near midpoints: 600000 checked, 0 differ" in ran.stdout
