"""Every CPU SIMD build (baseline, AVX2, AVX-512, AVX-512 with AVX512_BF16) against the float64 model.

The kernel build is chosen once per process (PYBN_CPU_ISA caps it), so each build runs in a
subprocess that saves its results; this process checks them against tests/reference.py.
Shapes cover both kernel families (channel-major and channel-last), chunk splits, slab
tails and streaming-store sizes.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import pybn
from conftest import load_and_unlink, random_inputs
from reference import assert_close, backward_reference, forward_reference

# The kernel builds, in the order PYBN_CPU_ISA caps them; a processor that cannot run one gets
# the best it can run below it.
BUILDS = ("baseline", "avx2", "avx512", "avx512bf16")

CASES = [
    # (shape, axis, dtype)
    ((4, 6, 7, 7), 1, "float32"),          # channel-major, short runs
    ((3, 5, 41), -1, "float32"),           # channel-last, C not a multiple of the slab
    ((2, 3, 200, 250), 1, "float32"),      # few channels: chunks split across threads, streaming
    ((8, 50, 50, 64), -1, "float32"),      # channel-last, several row chunks, streaming
    ((4, 6, 7, 7), 1, "float16"),
    ((5, 9, 33), -1, "float16"),
    ((4, 6, 7, 7), 1, "float64"),
    ((6, 37), 1, "float64"),
    ((3, 12, 560), 1, "float64"),          # long runs ending in whole vectors and a scalar tail
    # cases of exactly 16K elements, the smallest calls that run on a team (team_size):
    ((16, 1024), 1, "float32"),            # 16K elements: column strips over two threads
    ((8, 32, 8, 8), 1, "float64"),         # 16K elements, 8 rows of 32 channels: the row layout
    ((4, 16, 16, 16), 1, "float32"),       # 16K elements, 4 rows of runs of 256: long runs
    ((2, 8, 32, 32), 1, "float16"),        # 16K elements: long runs of 1024 over two threads
    # few rows of short runs by long runs (uses_long_runs: the line in bytes, not vectors):
    ((2, 64, 7, 7), 1, "float64"),         # runs of 49 in float64 (not in float32)
    ((1, 512, 7, 7), 1, "float64"),        # the same, 25K elements: two threads
    ((2, 64, 14, 14), 1, "float16"),       # runs of 196, 25K elements
    ((1, 512, 7, 7), 1, "float32"),        # runs of 49 in float32 too (rows * 24 <= inner):
                                           # a full iteration, then a partial one of 17
    ((2, 200, 6, 6), 1, "float16"),        # runs of 36 (4 of them in a native vector's last
                                           # piece on AVX-512, other pieces elsewhere)
    ((1, 700, 5, 5), 1, "float64"),        # runs of 25 in float64, backward in batches of 8
    ((8, 64, 7, 7), 1, "float32"),         # 8 rows of 49: the backward by long runs (rows * 6
                                           # <= inner), the forward by the row layout
    ((4, 3, 512, 512), 1, "float32"),      # long runs, few channels: chunks spread over threads
    ((16, 64, 64, 32), -1, "float32"),     # channel-last, row groups spread over threads
    ((512, 60, 7, 7), 1, "float32"),       # short inner, 4 channel blocks: a thread owns
                                           # blocks on 1 or 2 threads; on 3 (fewer than two
                                           # per thread) row groups spread over the threads
    ((64, 400, 7, 7), 1, "float16"),       # 16-bit short inner, 12 blocks of 213 KB: a
                                           # thread owns a block
    ((350, 400, 7, 7), 1, "float32"),      # 25 blocks of over 1 MiB: two passes, the second
                                           # in memory order (write_channel_runs)
    ((4, 64, 24, 24), 1, "float16"),       # long runs, 4 adjacent channels per work item
    ((512, 1024), 1, "float32"),           # 2-D: per-position coefficients set by all threads
    ((64, 20000), 1, "float32"),           # 2-D, 20 channel blocks: a thread owns a block
    ((40, 6000, 3), 1, "float16"),         # inner 3, 12 blocks: a thread owns a block
    ((160, 1251), 1, "float64"),           # 2-D, 4 blocks, the last shorter: owned on 1 or 2
                                           # threads, row groups over the threads on 3
    ((64, 512, 7, 7), 1, "float64"),       # streamed, 64 blocks of 200 KB, rows of whole lines:
                                           # normalized alongside the next block's statistics
                                           # (the test of PYBN_CPU_LLC_MB, below)
    ((80, 700, 3), 1, "float16"),          # inner 3, 4 blocks: the same
    ((16, 8, 80, 80), 1, "float64"),       # 800 KB channels: shared by two threads on 2,
                                           # owned by one on 1 and 3 (shared_channels)
    ((8, 12, 120, 120), 1, "float32"),     # 460 KB float32 channels: the same
    ((128, 16, 28, 28), 1, "float32"),     # 400 KB channels of 3 KB runs: two channels an
                                           # item, shared by two threads on 2
    ((64, 24, 28, 28), 1, "float32"),      # 200 KB channels: four an item, the same
    ((16, 4, 160, 80), 1, "float64"),      # 1.6 MB channels: each shared by four threads on 4,
                                           # by two on 2 (parts of 800 KB), owned on 1 and 3
    ((24, 4, 112, 112), 1, "float32"),     # 1.2 MB channels: shared by two threads on 2 (parts
                                           # of 600 KB), by three on 3
    ((24, 15, 3001), 1, "float32"),        # 4.3 MB from memory, runs of 12 KB: summed four at a
    ((12, 15, 3001), 1, "float64"),        # time, 512 bytes of each in turn, each run ending in
                                           # part of a vector (for_each_run_group)
    ((8, 16, 128, 128), 1, "float16"),     # 4 MiB from memory: owned items of two channels,
                                           # handed out in the order threads ask (ItemQueue)
    ((256, 1024), 1, "float16"),           # 2-D in cache: column strips, two reduction chunks
    ((48, 1000), 1, "float16"),            # strips ending in part of a vector (masked on
    ((100, 777), 1, "float32"),            # AVX-512, element by element elsewhere)
    ((64, 1000), 1, "float64"),
    # rows of 16 channels in one chunk of 131072 elements: summed as wide rows on one thread,
    # the second pass split over the team (two_pass_team); channel-last the same
    ((8192, 16), 1, "float32"),
    ((2, 64, 64, 16), -1, "float16"),
    # a channel's positions filled by whole vectors, the last over the one before (fill_run):
    # 17 float32 and 9 float64 positions in the AVX-512 build, more vectors in the others
    ((6, 40, 17), 1, "float32"),
    ((6, 40, 9), 1, "float64"),
]

WORKER = r"""
import os, sys, numpy as np, pybn
sys.path.insert(0, sys.argv[2])
if os.environ.get("PYBN_TEST_SET_THREADS"):  # pybn's own setting, over OMP_NUM_THREADS
    pybn.set_num_threads(int(os.environ["PYBN_TEST_SET_THREADS"]))
    assert pybn.get_num_threads() == int(os.environ["PYBN_TEST_SET_THREADS"])
from conftest import random_inputs
from test_isa import CASES
results = {"isa": np.array(pybn.info()["cpu_isa"])}
def past_line(like):
    storage = np.empty(like.nbytes + 128, np.uint8)
    start = (-storage.ctypes.data) % 64 + 16
    view = storage[start:start + like.nbytes].view(like.dtype).reshape(like.shape)
    view[...] = np.nan
    return view
for index, (shape, axis, dtype) in enumerate(CASES):
    inputs = random_inputs(np.random.default_rng(index), shape, axis=axis, dtype=dtype)
    dy = np.random.default_rng(100 + index).standard_normal(shape).astype(dtype)
    # inference first: training updates the moving statistics in place
    y_inference = pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"],
                                  inputs["moving_mean"], inputs["moving_var"], axis=axis,
                                  fix_gamma=False, training=False)
    # y and dx 16 bytes past a line (NumPy's own large buffers start there, but not always):
    # the column strips of 2-D inputs then start with a part of a line
    y, mean, invstd = pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"],
                                      inputs["moving_mean"], inputs["moving_var"], axis=axis,
                                      fix_gamma=False, output_mean_var=True, out=past_line(dy))
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd,
                                                 axis=axis, fix_gamma=False, dx=past_line(dy))
    for name, value in dict(y=y, mean=mean, invstd=invstd, dx=dx, dgamma=dgamma, dbeta=dbeta,
                            y_inference=y_inference).items():
        results[f"{index}_{name}"] = value
np.savez(sys.argv[1], **results)
"""


def run_worker(path, **environment):
    """Runs WORKER in a subprocess with these environment variables set; returns its results."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, **environment)
    subprocess.run([sys.executable, "-c", WORKER, str(path), here], env=env, check=True, cwd=str(path.parent))
    return load_and_unlink(path)


def run_build(isa, path):
    return run_worker(path, PYBN_CPU_ISA=isa)


def check_against_reference(results, label):
    for index, (shape, axis, dtype) in enumerate(CASES):
        inputs = random_inputs(np.random.default_rng(index), shape, axis=axis, dtype=dtype)
        dy = np.random.default_rng(100 + index).standard_normal(shape).astype(dtype)
        expected = forward_reference(**inputs, fix_gamma=False, axis=axis)
        what = f"{label} {shape} axis {axis} {dtype}"
        assert_close(results[f"{index}_y"], expected["y"], what=f"y, {what}")
        assert_close(results[f"{index}_mean"], expected["mean"], what=f"mean, {what}")
        assert_close(results[f"{index}_invstd"], expected["invstd"], what=f"invstd, {what}")
        inference = forward_reference(**inputs, fix_gamma=False, axis=axis, training=False)
        assert_close(results[f"{index}_y_inference"], inference["y"], what=f"inference y, {what}")
        dx, dgamma, dbeta = backward_reference(dy, inputs["data"], inputs["gamma"], results[f"{index}_mean"],
                                               results[f"{index}_invstd"], fix_gamma=False, axis=axis)
        scale = np.abs(dx).max() * 10 + np.abs(dy.astype(np.float64)).max()
        assert_close(results[f"{index}_dx"], dx, scale=scale, what=f"dx, {what}")
        assert_close(results[f"{index}_dgamma"], dgamma, scale=np.abs(dgamma).max() * 10 + 1, what=f"dgamma, {what}")
        assert_close(results[f"{index}_dbeta"], dbeta, scale=np.abs(dbeta).max() * 10 + 1, what=f"dbeta, {what}")


@pytest.mark.parametrize("isa", BUILDS)
def test_simd_build_matches_reference(isa, tmp_path):
    results = run_build(isa, tmp_path / f"{isa}.npz")
    ran = str(results["isa"])
    if ran != isa:
        pytest.skip(f"the {isa} build cannot run here: not built, or not on this processor (it ran {ran})")
    check_against_reference(results, isa)


def test_builds_agree_with_each_other(tmp_path):
    """All builds give the same bits: the kernels are compiled without FMA contraction (16-bit
    formulas fuse by name, the baseline build emulating the instruction exactly) and every
    reduction has the same lane structure whatever the vector width (see CMakeLists.txt)."""
    runs = {isa: run_build(isa, tmp_path / f"{isa}.npz") for isa in BUILDS}
    distinct = {str(r["isa"]): r for r in runs.values()}
    if len(distinct) < 2:
        pytest.skip(f"only one SIMD build can run here ({sorted(distinct)})")
    first, *others = distinct.values()
    for other in others:
        for name in first.files:
            if name != "isa":
                assert first[name].tobytes() == other[name].tobytes(), name


def test_thread_count_does_not_change_results(tmp_path):
    """Chunks and their merge order depend only on the shape: 1, 2 and 3 threads agree bit for
    bit. Three threads (on any machine: OpenMP runs them even on fewer cores) also take the
    row layout's two-pass path with several blocks (4 blocks, fewer than two per thread), which
    1 and 2 threads never do: those results are checked against the model as well."""
    outputs = [run_worker(tmp_path / f"t{threads}.npz", OMP_NUM_THREADS=threads) for threads in ("1", "2", "3")]
    for name in outputs[0].files:
        if name != "isa":
            for other in outputs[1:]:
                assert outputs[0][name].tobytes() == other[name].tobytes(), name
    check_against_reference(outputs[2], "3 threads")
    assert pybn.info()["omp_threads"] >= 1


def test_set_num_threads_does_not_change_results(tmp_path):
    """pybn.set_num_threads(4) over OMP_NUM_THREADS=1 (four threads: whole blocks split over
    4, channels shared by pairs of threads) gives the bits of OpenMP's 2 threads, and the model's
    values. (That the setting reaches the team is tested in test_misc.py.)"""
    four = run_worker(tmp_path / "set4.npz", OMP_NUM_THREADS="1", PYBN_TEST_SET_THREADS="4")
    two = run_worker(tmp_path / "omp2.npz", OMP_NUM_THREADS="2")
    for name in two.files:
        if name != "isa":
            assert four[name].tobytes() == two[name].tobytes(), name
    check_against_reference(four, "4 threads set by pybn.set_num_threads")


def test_threads_giving_up_on_each_other_does_not_change_results(tmp_path):
    """Threads sharing channels (shared_channels) that give up on each other: the last thread to
    arrive at that item finishes it alone, and the group's other items go whole to whichever
    thread asks first. That is what a thread that lost its core to another process brings
    about. PYBN_CPU_SHARE_WAIT_US=0 makes the first thread to arrive give up at once, so groups
    split at their first item, whose moments came from chunk_moments; PYBN_CPU_SHARE_SPLIT_AT=2
    makes them split at their third, whose moments were summed while the item before was
    normalized. The bits stay those of threads that met at every item, on 2 threads (pairs)
    and on 4 (two pairs, and four threads sharing each 1.6 MB float64 channel), and the values
    the model's."""
    met = run_worker(tmp_path / "met.npz", OMP_NUM_THREADS="2")
    for label, setting in (("wait0", dict(PYBN_CPU_SHARE_WAIT_US="0")), ("split2", dict(PYBN_CPU_SHARE_SPLIT_AT="2"))):
        for threads in ("2", "4"):
            alone = run_worker(tmp_path / f"{label}_{threads}.npz", OMP_NUM_THREADS="1",
                               PYBN_TEST_SET_THREADS=threads, **setting)
            for name in met.files:
                if name != "isa":
                    assert alone[name].tobytes() == met[name].tobytes(), f"{name}, {label}, {threads} threads"
        check_against_reference(alone, f"4 threads, {label}")


def test_blocks_normalized_alongside_do_not_change_results(tmp_path):
    """A thread owning streamed row-layout blocks normalizes each (writes its dx) while it sums
    the next (Forward::normalizes_alongside, Backward::writes_alongside): maps always ((64, 512, 7, 7) float64 here), 2-D rows
    ((64, 20000) float32) where the tensor is larger than the last-level cache, as every
    streamed one is with PYBN_CPU_LLC_MB=1. The bits of a run with nothing streamed
    (PYBN_CPU_STREAM_STORES=0: never alongside), on every build and on 1 and 3 threads."""
    apart = run_worker(tmp_path / "apart.npz", PYBN_CPU_STREAM_STORES="0")
    for isa in BUILDS:
        for threads in ("1", "3"):
            alongside = run_worker(tmp_path / f"{isa}_{threads}.npz", PYBN_CPU_LLC_MB="1", PYBN_CPU_ISA=isa,
                                   OMP_NUM_THREADS=threads)
            for name in apart.files:
                if name != "isa":
                    assert alongside[name].tobytes() == apart[name].tobytes(), f"{name}, {isa}, {threads} threads"
    check_against_reference(alongside, "blocks normalized alongside")


def test_smaller_team_than_asked_for_does_not_change_results(tmp_path):
    """OpenMP may give pybn fewer threads than it asks for (OMP_THREAD_LIMIT here; OMP_DYNAMIC,
    or a call from inside the caller's parallel region, tests/c/test_openmp_callers.c): work
    split over the threads asked for would leave the missing threads' share undone. With
    pybn.set_num_threads(2) and a limit of one thread, every output is the bits of two."""
    two = run_worker(tmp_path / "two.npz", OMP_NUM_THREADS="2")
    limited = run_worker(tmp_path / "limited.npz", OMP_NUM_THREADS="1", OMP_THREAD_LIMIT="1",
                         PYBN_TEST_SET_THREADS="2")
    for name in two.files:
        if name != "isa":
            assert limited[name].tobytes() == two[name].tobytes(), name


# bfloat16 results where the avx512bf16 build's vcvtneps2bf16 (which flushes denormal inputs to
# zero) and the software rounding of the other builds part ways unless that build falls back
# for them: a channel whose float32 results are denormal (gamma 3e-39, beta 0), one around the
# smallest normal (gamma 1e-36), one past bfloat16's largest finite value (gamma 1e38); NaN and
# inf in x. Streamed (4.8 MB) and in cache; NCHW long runs, 7x7 blocks, channel-last, 2-D; the
# outputs at 0 and 1 element from a line (single vectors and pairs of vectors a line).
BF16_CASES = [((8, 6, 200, 250), 1), ((4, 12, 33, 9), 1), ((64, 40, 7, 7), 1), ((3, 50, 50, 48), -1),
              ((256, 100), 1)]



def bf16_inputs(index):
    """BF16_CASES[index]'s inputs (random_inputs with the channels and values above) and dy."""
    import ml_dtypes
    bf16 = np.dtype(ml_dtypes.bfloat16)
    shape, axis = BF16_CASES[index]
    inputs = random_inputs(np.random.default_rng(300 + index), shape, axis=axis, dtype=bf16)
    inputs["gamma"][:3] = [3e-39, 1e-36, 1e38]
    inputs["beta"][:2] = 0.0
    flat = inputs["data"].reshape(-1)
    flat[5] = np.nan
    flat[flat.size // 2] = np.inf
    dy = np.random.default_rng(400 + index).standard_normal(shape).astype(bf16)
    return inputs, dy


BF16_WORKER = r"""
import sys, numpy as np, pybn
sys.path.insert(0, sys.argv[2])
from test_isa import BF16_CASES, bf16_inputs
results = {"isa": np.array(pybn.info()["cpu_isa"])}
for index, (shape, axis) in enumerate(BF16_CASES):
    inputs, dy = bf16_inputs(index)
    bf16 = dy.dtype
    for offset in (0, 1):
        def output():
            storage = np.empty(dy.nbytes + 128, np.uint8)
            start = (-storage.ctypes.data) % 64 + 2 * offset
            return storage[start:start + dy.nbytes].view(bf16).reshape(shape)
        y_inference = pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"], inputs["moving_mean"],
                                      inputs["moving_var"], axis=axis, fix_gamma=False, training=False,
                                      out=output())
        y, mean, invstd = pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"],
                                          inputs["moving_mean"].copy(), inputs["moving_var"].copy(), axis=axis,
                                          fix_gamma=False, output_mean_var=True, out=output())
        dx, _, _ = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd, axis=axis,
                                            fix_gamma=False, dx=output())
        for name, value in dict(y=y, y_inference=y_inference, dx=dx, mean=mean, invstd=invstd).items():
            results[f"{index}_{offset}_{name}"] = value
np.savez(sys.argv[1], **results)
"""


def bf16_values(saved):
    """An array saved by BF16_WORKER as float64 (np.savez keeps bfloat16 as 2-byte voids)."""
    import ml_dtypes
    return (saved.view(ml_dtypes.bfloat16) if saved.dtype.kind == "V" else saved).astype(np.float64)


def run_bf16_worker(path, isa):
    pytest.importorskip("ml_dtypes", reason="bfloat16 arrays need the ml_dtypes package")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", BF16_WORKER, str(path), here], env=dict(os.environ, PYBN_CPU_ISA=isa),
                   check=True, cwd=str(path.parent))
    return load_and_unlink(path)


def same_bits_or_both_nan(a, b):
    """Element by element: a and b have the same bytes, or both are NaN (a NaN's sign and payload
    come from whichever operation made it: where two NaNs meet, as in y's channel of an inf, the
    instruction's operand order picks one)."""
    bits = np.dtype(f"u{a.dtype.itemsize}")
    values_a, values_b = bf16_values(a), bf16_values(b)
    return (a.view(bits) == b.view(bits)) | (np.isnan(values_a) & np.isnan(values_b))


def test_bfloat16_rounding_is_the_same_on_every_build(tmp_path):
    """The builds' bfloat16 outputs, byte for byte (any NaN for a NaN), and the denormal channel's
    results against the float64 model within half a bfloat16 denormal step (2^-134): a build
    that flushed them to zero fails here even where it is the only one that runs."""
    runs = {str(r["isa"]): r for r in (run_bf16_worker(tmp_path / f"{isa}.npz", isa) for isa in BUILDS)}
    first_isa, first = next(iter(runs.items()))
    for isa, other in runs.items():
        for name in first.files:
            if name != "isa":
                same = same_bits_or_both_nan(first[name], other[name])
                assert same.all(), f"{name}: {first_isa} and {isa} differ at {np.argwhere(~same)[:5].tolist()}"
    for index, (shape, axis) in enumerate(BF16_CASES):
        inputs, _ = bf16_inputs(index)
        channel0 = (slice(None),) * (axis % len(shape)) + (0,)
        want = forward_reference(**inputs, fix_gamma=False, axis=axis, training=False)["y"][channel0]
        finite = np.isfinite(want)
        assert np.count_nonzero(want[finite]) > 0
        for isa, results in runs.items():
            for offset in (0, 1):
                actual = bf16_values(results[f"{index}_{offset}_y_inference"])[channel0]
                error = np.abs(actual[finite] - want[finite])
                assert error.max() <= 2.0 ** -134 * 1.0001, f"{isa} {shape}: denormal outputs off by {error.max()}"
