"""How bench/cpu.py samples its contestants (measure_group, time_calls), checked with stub
contestants that record when they run, and how its table divides them (group_rows). Speed is
never asserted here: these tests hold the benchmark to its method (every contestant once a
round, in an order that changes, so that no contestant always runs after the same one;
untimed calls of the same contestant first)."""
import importlib.util
import pathlib
import time

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench" / "cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pybn_bench_cpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stub_samplers(seconds, calls):
    """name -> sampler(number, prime_s) that records (name, number, prime_s) and reports
    seconds[name] per call."""
    def sampler(name):
        def sample(number, prime_s=1e-9):
            calls.append((name, number, prime_s))
            return seconds[name]
        return sample
    return {name: sampler(name) for name in seconds}


def timed_rounds(bench, names, repeats, seed, per_call=0.01, prime_s=0.02):
    calls = []
    results = bench.measure_group(stub_samplers({n: per_call for n in names}, calls), repeats=repeats,
                                  warmup=1, min_sample_s=0.0, gap_s=0.0, label="stub", seed=seed,
                                  prime_s=prime_s)
    # Warm-up calls pass prime_s False, calibration calls the default; samples pass prime_s.
    timed = [name for name, _, prime in calls if prime == prime_s]
    return results, [timed[i:i + len(names)] for i in range(0, len(timed), len(names))]


def test_every_contestant_once_a_round_in_changing_orders(bench):
    names = [f"c{i}" for i in range(6)]
    results, rounds = timed_rounds(bench, names, repeats=20, seed=3)
    assert len(rounds) == 20
    for order in rounds:
        assert sorted(order) == names
    assert len({tuple(order) for order in rounds}) > 10
    for name in names:
        res = results[name]
        assert len(res["samples_s"]) == 20
        assert res["median_ms"] == pytest.approx(10.0)
        # Its predecessors vary: a fixed rotation would give each contestant one.
        assert len(set(res["after"][1:])) >= 3, (name, res["after"])


def test_after_names_the_contestant_that_ran_just_before(bench):
    names = ["a", "b", "c", "d"]
    results, rounds = timed_rounds(bench, names, repeats=7, seed=11)
    sequence = [name for order in rounds for name in order]
    seen = {name: [] for name in names}
    for i, name in enumerate(sequence):
        seen[name].append(sequence[i - 1] if i > 0 else None)
    for name in names:
        assert results[name]["after"] == seen[name]


def test_the_order_follows_the_seed(bench):
    names = [f"c{i}" for i in range(5)]
    _, first = timed_rounds(bench, names, repeats=6, seed=5)
    _, again = timed_rounds(bench, names, repeats=6, seed=5)
    _, other = timed_rounds(bench, names, repeats=6, seed=6)
    assert first == again
    assert first != other


def test_samples_of_slow_calls_are_not_primed(bench):
    calls = []
    results = bench.measure_group(stub_samplers({"fast": 0.01, "slow": 0.06}, calls), repeats=3, warmup=1,
                                  min_sample_s=0.0, gap_s=0.0, label="stub", seed=0, prime_s=0.02)
    assert results["fast"]["prime_s"] == 0.02
    assert results["slow"]["prime_s"] == 0.0
    # (the warm-up call passes False)
    assert [prime for name, _, prime in calls if name == "slow" and prime is not False][-3:] == [0.0] * 3


def test_time_calls_primes_for_the_time_asked(bench):
    stamps = []

    def call():
        stamps.append(time.perf_counter())

    bench.time_calls(call, 3, prime_s=0.0)
    assert len(stamps) == 3
    stamps.clear()
    bench.time_calls(call, 3)               # the default: one untimed call
    assert len(stamps) == 4
    stamps.clear()
    bench.time_calls(call, 3, prime_s=0.01)
    assert len(stamps) >= 5
    first_timed = stamps[-3]
    assert first_timed - stamps[0] >= 0.009


def test_cpu_identity_reads_the_first_processor(bench, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
                    "model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\n"
                    "flags\t\t: fpu avx2 f16c avx512f avx512_fp16 amx_tile\n\n"
                    "processor\t: 1\ncpu family\t: 7\nmodel\t\t: 1\nflags\t\t: fpu\n\n")
    model, ident, flags = bench.cpu_identity(str(info))
    assert model == "Intel(R) Xeon(R) Processor"
    assert ident == "family 6 model 207 stepping 2"
    assert flags == ["avx2", "f16c", "avx512f", "avx512_fp16", "amx_tile"]
    assert bench.cpu_identity(str(tmp_path / "missing")) == (None, None, [])


def test_bfloat16_is_an_opt_in_dtype(bench):
    """--dtypes bfloat16 (not in the default table): ml_dtypes' bfloat16 data, float32
    parameters as SPEC.md has them for 16-bit data, and the PyTorch bridge through int16."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import numpy as np
    assert "bfloat16" not in bench.DTYPES
    assert bench.parse_args(["--dtypes", "bfloat16"]).dtypes == ["bfloat16"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtypes", "bfloat8"])
    phys = bench.make_data((2, 3, 4, 5), "bfloat16", "channels_last", seed=1)
    assert phys["x"].dtype == np.dtype(ml_dtypes.bfloat16) and phys["x"].shape == (2, 4, 5, 3)
    assert phys["dy"].dtype == np.dtype(ml_dtypes.bfloat16)
    for name in ("gamma", "beta", "moving_mean", "moving_var"):
        assert phys[name].dtype == np.float32 and phys[name].shape == (3,)
    assert bench.param_dtype("float16") == np.float32 and bench.param_dtype("float64") == np.float64


def test_bfloat16_reaches_pytorch_as_the_same_bytes(bench):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    torch = pytest.importorskip("torch")
    import numpy as np
    phys = bench.make_data((2, 3, 4, 5), "bfloat16", "channels_last", seed=1)
    t = bench.torch_view(torch, phys["x"])
    assert t.dtype == torch.bfloat16 and t.data_ptr() == phys["x"].ctypes.data
    back = bench.torch_numpy(torch, t.permute(0, 3, 1, 2))
    assert back.dtype == np.dtype(ml_dtypes.bfloat16)
    assert back.tobytes() == phys["x"].transpose(0, 3, 1, 2).tobytes()


def fake_group(pybn_s, copy_s):
    """A measured group as measure_group leaves it, for the NCHW inference rows: pybn's
    samples and the 2-thread copy floor's, one per round."""
    def res(samples):
        return {"samples_s": samples, "median_ms": float(np.median(samples) * 1e3),
                "min_ms": float(np.min(samples) * 1e3)}
    return {"shape_name": "nchw", "shape": [2, 3, 4, 5], "dtype": "float32", "layout": "nchw",
            "results": {"pybn/fwd_infer/prealloc": res(pybn_s), "floor/copy/2t": res(copy_s)}}


def test_paired_ratio_divides_round_by_round(bench):
    # Rounds 3 and 4 slow for both, rounds 1 and 2 for pybn alone: pybn's median falls in a
    # slow round, the copy's in a fast one (their ratio 3.3), while round by round pybn takes
    # 1.1x the copy in three rounds of five.
    pybn_s, copy_s = [1.1, 3.3, 3.3, 3.3, 3.3], [1.0, 1.0, 1.0, 3.0, 3.0]
    (row,) = bench.group_rows(fake_group(pybn_s, copy_s), ["fwd_infer"], ["prealloc"], "median")
    assert row["floor"] == "copy/2t"
    assert row["ratio"] == pytest.approx(3.3 / 1.0)
    assert row["ratio_paired"] == pytest.approx(float(np.median(np.divide(pybn_s, copy_s))))
    assert row["ratio_paired"] == pytest.approx(1.1)


def test_paired_ratio_needs_every_round(bench):
    group = fake_group([1.0, 1.1], [1.0, 1.0, 1.0])  # pybn missed a round
    (row,) = bench.group_rows(group, ["fwd_infer"], ["prealloc"], "median")
    assert row["ratio"] == pytest.approx(1.05)
    assert row["ratio_paired"] is None


@pytest.mark.parametrize("layout, shape", [("nchw", (2, 3, 4, 5)), ("channels_last", (2, 3, 4, 5)), ("2d", (8, 16))])
def test_page_offsets_name_where_the_outputs_lie(bench, layout, shape):
    """Each group records where pybn's preallocated outputs lie against x and dy in the 4 KB
    page (the placement that moves some passes' time on Zen 3), from the buffers themselves."""
    import pybn

    phys = bench.make_data(shape, "float32", layout, 7)
    case = bench.PybnCase(pybn, phys, layout)
    offsets = case.page_offsets()
    expected = {"y-x": (case.y.ctypes.data - case.x.ctypes.data) % 4096,
                "dx-x": (case.dx.ctypes.data - case.x.ctypes.data) % 4096,
                "dx-dy": (case.dx.ctypes.data - case.dy.ctypes.data) % 4096}
    assert offsets == expected
    assert all(isinstance(v, int) and 0 <= v < 4096 for v in offsets.values())
