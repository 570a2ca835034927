"""Builds the C / C++ programs of tests/c against the installed wheel and runs them with ctest."""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_c_programs_through_ctest(tmp_path):
    import pybn

    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", os.path.join(HERE, "c"), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}",
         f"-DPYBN_INCLUDE_DIR={pybn.get_include()}", f"-DPYBN_LIBRARY={pybn.get_library()}"],
        capture_output=True, text=True, cwd=tmp_path)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    ran = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "100% tests passed" in ran.stdout
    if "test_openmp_callers built" in configure.stdout:
        assert "test_openmp_callers" in ran.stdout


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) is not installed")
def test_library_exports_only_the_c_abi():
    import pybn

    listed = subprocess.run(["nm", "-D", "--defined-only", pybn.get_library()],
                            capture_output=True, text=True, check=True)
    symbols = [line.split()[-1] for line in listed.stdout.splitlines() if line.strip()]
    assert "pybn_forward" in symbols and "pybn_backward" in symbols
    assert [s for s in symbols if not s.startswith("pybn_")] == []
