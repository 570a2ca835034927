"""The C++ programs of bench/ (pattern_limits.cpp, row_limits.cpp, strip_limits.cpp, call_times.cpp,
convert_costs.cpp) build against the installed library with the command their headers give
(convert_costs.cpp does not call it; it is built the same way), and, where the CPU has AVX-512,
run on a small shape and print their result lines; page_alias.cpp (no pybn) builds and runs
wherever the CPU has AVX2 and FMA; ab_libs.cpp (dlopens builds of the library) builds and runs
anywhere. Their timings are not checked (speed lives in bench/)."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
FLAGS = ["-O2", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mf16c"]

# program -> its small runs: (arguments, a line the output must contain)
PROGRAMS = {
    "pattern_limits.cpp": [(["float32", "2", "4", "64", "1"], "pybn/pattern")],
    # float32 and float16 time pybn's arithmetic too (arith, alongside) where rows are whole
    # 64-byte lines; float64 does not, nor rows of 100 7x7 float16 maps (9800 bytes)
    "row_limits.cpp": [(["float32", "4", "64", "49", "1"], "pybn/alongside"),
                       (["float16", "4", "64", "49", "1"], "pybn/alongside"),
                       (["float64", "4", "64", "49", "1"], "pybn/phases"),
                       (["float16", "5", "100", "49", "1"], "pybn/phases")],
    "strip_limits.cpp": [(["16", "128", "1"], "pybn/strips")],
    "call_times.cpp": [(["float32", "2", "8", "49", "bwd", "5", "1"], "pybn/bwd float32 2x8x49")],
    "convert_costs.cpp": [(["4", "1"], "f16 normalize")],
}
RUNS = [(source, args, expected) for source, runs in sorted(PROGRAMS.items()) for args, expected in runs]
RUN_IDS = [f"{source}-{'-'.join(args[:3])}" for source, args, _ in RUNS]


def cpu_flags():
    """The words of /proc/cpuinfo (its flags among them); none where it cannot be read."""
    try:
        return set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def has_avx512():
    """Whether this CPU runs what FLAGS let the compiler use."""
    return {"avx512f", "avx512bw", "avx512dq", "f16c"} <= cpu_flags()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """source -> (path of the program, the compiler's result)."""
    import pybn

    library = pathlib.Path(pybn.get_library())
    out = tmp_path_factory.mktemp("bench_programs")
    results = {}
    for source in PROGRAMS:
        exe = out / source.replace(".cpp", "")
        results[source] = exe, subprocess.run(
            ["g++", *FLAGS, f"-I{pybn.get_include()}", str(BENCH / source), "-o", str(exe),
             f"-L{library.parent}", f"-l:{library.name}", f"-Wl,-rpath,{library.parent}"],
            capture_output=True, text=True)
    return results


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.parametrize("source", sorted(PROGRAMS))
def test_bench_program_builds(source, built):
    exe, result = built[source]
    assert result.returncode == 0, result.stderr
    assert exe.is_file()


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.skipif(not has_avx512(), reason="the bench programs need AVX-512 to run")
@pytest.mark.parametrize("source, args, expected", RUNS, ids=RUN_IDS)
def test_bench_program_runs(source, args, expected, built):
    exe, result = built[source]
    assert result.returncode == 0, result.stderr
    ran = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "median" in ran.stdout and expected in ran.stdout, ran.stdout
    if expected == "pybn/alongside":  # the arithmetic contestants were timed
        for name in ("arith", "alongside"):
            assert re.search(rf"\b{name} \d+\.\d{{3}}", ran.stdout), ran.stdout
    if source == "convert_costs.cpp":  # every formula timed, and the model computed from them
        for name in ("f16 load", "f16 store", "f16 moments", "f16 normalize", "f32 moments",
                     "f32 normalize", "f16 copy"):
            pattern = rf"^  {name} +(\d+\.\d{{3}}) ns +(\d+\.\d{{2}}) cycles \((\d+\.\d{{2}})\)$"
            line = re.search(pattern, ran.stdout, re.M)
            assert line and all(float(v) > 0 for v in line.groups()), ran.stdout
        pattern = r"float16 (\d+\.\d+) cycles \((\d+\.\d+) ns\), float32 (\d+\.\d+) cycles"
        model = re.search(pattern, ran.stdout)
        assert model and all(float(v) > 0 for v in model.groups()), ran.stdout
        pattern = r"arithmetic alone: float16 \d+\.\d{2} ms, float32 \d+\.\d{2} ms"
        assert re.search(pattern, ran.stdout), ran.stdout


# bench/page_alias.cpp needs no pybn and only AVX2 and FMA: built with the command in its
# header and run on 1 MiB, every line (streams, strips, lag) printed with a time.
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="page_alias.cpp needs AVX2 and FMA to run")
def test_page_alias_program_runs(tmp_path):
    exe = tmp_path / "page_alias"
    built = subprocess.run(["g++", "-O2", "-mavx2", "-mfma", str(BENCH / "page_alias.cpp"), "-o", str(exe)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe), "1", "2"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    streams = re.findall(r"^streams \w+ +R=(\d): page median (\d+\.\d{3}) ms, line median (\d+\.\d{3}) ms, "
                         r"lines median (\d+\.\d{3}) ms$", ran.stdout, re.M)
    assert [line[0] for line in streams] == ["1", "2", "4"], ran.stdout
    strips = re.findall(r"^strips  apart +(\d+): strips median (\d+\.\d) us, memory order median (\d+\.\d) us$",
                        ran.stdout, re.M)
    assert [int(a) for a, _, _ in strips] == [0, 16, 48, 1024, 4080], ran.stdout
    lag = re.findall(r"^lag     apart +(\d+): one by one median (\d+\.\d{3}) ms, blocks of four median (\d+\.\d{3}) ms$",
                     ran.stdout, re.M)
    assert [int(a) for a, _, _ in lag] == [0, 16, 48, 128, 4080], ran.stdout
    assert all(float(v) > 0 for line in streams + strips + lag for v in line[1:]), ran.stdout


# bench/ab_libs.cpp needs no instruction set beyond the library's own: built with the command in
# its header and run against the installed library and a copy of it (two files, so two loads),
# a line per build with its median and its per-sample ratios; bad arguments are refused.
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_ab_libs_program_runs(tmp_path):
    import pybn

    exe = tmp_path / "ab_libs"
    built = subprocess.run(["g++", "-O2", f"-I{pybn.get_include()}", str(BENCH / "ab_libs.cpp"), "-o", str(exe),
                            "-ldl"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    library = pathlib.Path(pybn.get_library())
    copy = tmp_path / "copy" / library.name
    copy.parent.mkdir()
    shutil.copy(library, copy)
    libs = f"{library},{copy}"
    for op, offset in (("train", "0"), ("bwd", "16"), ("infer", "48")):
        ran = subprocess.run([str(exe), libs, "float32", "2", "8", "49", op, "6", "1"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "CALL_TIMES_OUT_OFFSET": offset})
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"{op} float32 2x8x49, outputs {offset} bytes on, 1 threads" in ran.stdout, ran.stdout
        lines = re.findall(r"^  ([AB]) median (\d+\.\d\d) us, x(\d+\.\d{3}) of A; per-sample ratio median "
                           r"x(\d+\.\d{3}) \(quartiles (\d+\.\d{3})-(\d+\.\d{3})\)  (\S+)$", ran.stdout, re.M)
        assert [line[0] for line in lines] == ["A", "B"], ran.stdout
        assert [line[6] for line in lines] == [str(library), str(copy)], ran.stdout
        assert lines[0][2:6] == ("1.000",) * 4, ran.stdout  # A against itself
        assert all(float(v) > 0 for line in lines for v in line[1:6]), ran.stdout
        assert float(lines[1][4]) <= float(lines[1][3]) <= float(lines[1][5]), ran.stdout
    for args in ([str(library), "float32", "2", "8", "49"],             # one build only
                 [libs, "float32", "2", "8", "49", "sideways"],        # no such op
                 [libs, "float8", "2", "8", "49"]):                     # no such dtype
        refused = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "usage:" in refused.stderr, refused.stderr
    missing = subprocess.run([str(exe), f"{library},{tmp_path / 'none.so'}", "float32", "2", "8", "49"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "none.so" in missing.stderr, missing.stderr
