"""Library facts, backend selection, the command line, and concurrent calls."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pybn
from conftest import assert_bitwise_equal, poisoned, random_inputs, run_in_fork
from reference import assert_close, assert_gradients_close, forward_reference


def test_public_names():
    for name in ("batch_norm", "batch_norm_backward", "select_backend", "BatchNorm",
                 "CUDNN_BN_MIN_EPSILON", "info", "get_include", "get_library",
                 "cpu_scratch_bytes", "release_cpu_scratch", "host_cache_bytes",
                 "host_cache_limit", "set_host_cache_limit", "release_host_cache",
                 "get_num_threads", "set_num_threads"):
        assert hasattr(pybn, name), name
        assert name in pybn.__all__, name


def test_info():
    info = pybn.info()
    assert isinstance(info, dict)
    assert isinstance(info["version"], str) and info["version"]
    backends = info["backends"]
    assert "cpu" in backends
    if hasattr(pybn, "__version__"):
        assert info["version"] == pybn.__version__


def test_get_include_has_the_header():
    include = pybn.get_include()
    assert os.path.isdir(include)
    assert os.path.isfile(os.path.join(include, "pybn", "pybn.h"))


def test_get_library_is_a_file():
    library = pybn.get_library()
    assert os.path.isfile(library)
    assert os.path.basename(library).startswith(("libpybn", "pybn"))


@pytest.mark.parametrize("axis", [1, -1, 0])
@pytest.mark.parametrize("cudnn_off", [False, True])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_host_arrays_select_cpu(dtype, cudnn_off, axis):
    data = np.zeros((2, 3, 4), dtype=dtype)
    assert pybn.select_backend(data, axis=axis, cudnn_off=cudnn_off) == "cpu"
    assert pybn.select_backend(data) == "cpu"


def test_cudnn_min_epsilon():
    floor = pybn.CUDNN_BN_MIN_EPSILON
    assert floor is None or (isinstance(floor, float) and 0.0 <= floor < 1e-3)


def _run_cli(*arguments, cwd):
    return subprocess.run([sys.executable, "-m", "pybn", *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_help(tmp_path):
    result = _run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--shape", "--dtype", "--axis", "--repeat", "--threads"):
        assert option in result.stdout


@pytest.mark.parametrize("arguments", [
    ("--shape", "4,8,16,16"),
    ("--shape", "2,6,5", "--dtype", "float64", "--axis", "-1", "--repeat", "2"),
    ("--shape", "3,4,5,6", "--dtype", "float16", "--repeat", "1"),
    ("--shape", "8,64,64,64", "--repeat", "1", "--threads", "3"),
])
def test_cli_runs(tmp_path, arguments):
    result = _run_cli(*arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "results match the float64 reference" in result.stdout
    if "--threads" in arguments:
        assert "cpu: 3 thread(s)" in result.stdout


@pytest.mark.parametrize("arguments", [("--shape", "a,b"), ("--dtype", "int7"),
                                       ("--no-such-option",), ("--threads", "-1")])
def test_cli_rejects_bad_arguments(tmp_path, arguments):
    result = _run_cli(*arguments, cwd=tmp_path)
    assert result.returncode != 0


def test_concurrent_calls_from_threads():
    """Several Python threads run forward and backward at once on their own arrays: every
    result is the model's, and per-thread errors do not leak into other threads' calls."""
    thread_count = 6
    rounds = 8
    failures = []
    barrier = threading.Barrier(thread_count)

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            dtype = (np.float32, np.float64)[seed % 2]
            axis = (1, -1)[seed % 2]
            shape = (8, 5 + seed, 9, 7)
            channels = shape[axis]
            barrier.wait()
            for round_index in range(rounds):
                data = rng.normal(seed, 1 + round_index, shape).astype(dtype)
                dy = rng.standard_normal(shape).astype(dtype)
                gamma = rng.uniform(0.5, 1.5, channels).astype(dtype)
                beta = rng.uniform(-1, 1, channels).astype(dtype)
                moving_mean = np.zeros(channels, dtype)
                moving_var = np.ones(channels, dtype)
                if round_index % 3 == 2:
                    # An error in this thread in between: must not disturb anything.
                    with pytest.raises(ValueError):
                        pybn.batch_norm(data, gamma, beta, moving_mean, moving_var,
                                        axis=axis, eps=-1.0)
                y, mean, invstd = pybn.batch_norm(data, gamma, beta, moving_mean, moving_var,
                                                  axis=axis, fix_gamma=False,
                                                  output_mean_var=True)
                grads = pybn.batch_norm_backward(dy, data, gamma, mean, invstd, axis=axis,
                                                 fix_gamma=False)
                expected = forward_reference(data, gamma, beta, np.zeros(channels),
                                             np.ones(channels), fix_gamma=False, axis=axis)
                assert_close(y, expected["y"])
                assert_close(mean, expected["mean"])
                assert_close(invstd, expected["invstd"])
                assert_close(moving_mean, expected["moving_mean"])
                assert_close(moving_var, expected["moving_var"])
                assert_gradients_close(grads, dy, data, gamma, mean, invstd, fix_gamma=False,
                                       axis=axis)
        except BaseException as error:  # reported from the main thread below
            failures.append((seed, repr(error)))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not failures, failures


def _call_and_check(inputs, training, rng):
    """Forward (training or inference) and backward of `inputs` into poisoned buffers, checked
    against the reference; returns every output."""
    data = inputs["data"]
    state = {k: v.copy() for k, v in inputs.items()}
    y = poisoned(data.shape, data.dtype)
    y, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"], out=y,
                                      fix_gamma=False, training=training, output_mean_var=True)
    expected = forward_reference(**inputs, fix_gamma=False, training=training)
    assert_close(y, expected["y"], what="y")
    assert_close(mean, expected["mean"], what="mean")
    assert_close(invstd, expected["invstd"], what="invstd")
    dy = rng.standard_normal(data.shape).astype(data.dtype)
    dx = poisoned(data.shape, data.dtype)
    grads = pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, fix_gamma=False,
                                     use_global_stats=not training, dx=dx)
    assert_gradients_close(grads, dy, data, inputs["gamma"], mean, invstd, fix_gamma=False,
                           use_global_stats=not training)
    return (y, mean, invstd, state["moving_mean"], state["moving_var"]) + tuple(grads)


def test_scratch_reused_across_shapes(rng):
    """The kernels' scratch comes from a buffer each calling thread keeps between calls
    (cpp/src/cpu/scratch.hpp): a shape's results are the reference's, and bit-identical
    whether its scratch is fresh or left over from other shapes, from calls that needed more
    than the buffer held (and took the rest from the heap), or from one needing more than
    the buffer may ever hold (the coefficients of 400000 channels: 4.8 MB)."""
    cases = {
        "tiny": ((3, 5), np.float32, True),
        "2d": ((256, 1024), np.float16, True),
        "maps": ((8, 300, 7, 7), np.float64, True),
        "wide": ((1, 400000, 16), np.float32, False),
    }
    inputs = {name: random_inputs(rng, shape, dtype=dtype) for name, (shape, dtype, _) in cases.items()}
    first = {}
    pybn.release_cpu_scratch()
    assert pybn.cpu_scratch_bytes() == 0
    for step, name in enumerate(["tiny", "2d", "tiny", "wide", "2d", "maps", "release", "tiny",
                                 "wide", "maps", "2d"]):
        if name == "release":  # freed between calls: the next ones start from the heap again
            pybn.release_cpu_scratch()
            assert pybn.cpu_scratch_bytes() == 0
            continue
        outputs = _call_and_check(inputs[name], cases[name][2], np.random.default_rng(len(name)))
        if step > 0:  # grown to what the calls before needed (a step is a forward and a
            # backward call, so the second finds the first's size), never past the cap
            assert 0 < pybn.cpu_scratch_bytes() <= 4 << 20
        if name not in first:
            first[name] = outputs
        else:
            for index, (now, then) in enumerate(zip(outputs, first[name])):
                assert_bitwise_equal(now, then, what=f"{name} output {index}")


def test_scratch_buffer_is_per_thread(rng):
    """Each calling thread has its own scratch buffer: a new thread starts with none, grows
    its own, and releasing it leaves the other thread's as it was."""
    # (a row-layout shape: 2-D inputs in cache go strip by strip, with no scratch)
    inputs = random_inputs(rng, (64, 100, 3), dtype=np.float32)
    pybn.release_cpu_scratch()  # sized by this shape's calls only, as in the new thread below
    _call_and_check(inputs, True, rng)  # this thread's buffer now holds the shape's scratch
    held = pybn.cpu_scratch_bytes()
    assert held > 0
    seen = {}

    def other():
        try:
            seen["start"] = pybn.cpu_scratch_bytes()
            _call_and_check(inputs, True, np.random.default_rng(5))
            seen["grown"] = pybn.cpu_scratch_bytes()
            pybn.release_cpu_scratch()
            seen["released"] = pybn.cpu_scratch_bytes()
        except BaseException as error:  # reported below
            seen["error"] = repr(error)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=60)
    assert "error" not in seen, seen
    assert seen == {"start": 0, "grown": held, "released": 0}
    assert pybn.cpu_scratch_bytes() == held


def test_error_message_is_the_callers():
    """The message of a failed call describes that call (the per-thread last error is not
    stale): two different bad calls in a row name their own arguments."""
    data = np.zeros((2, 3), np.float32)
    params = [np.ones(3, np.float32) for _ in range(4)]
    with pytest.raises(ValueError, match="eps"):
        pybn.batch_norm(data, *params, eps=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        pybn.batch_norm(data, *params, momentum=2.0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_on_one_thread(rng):
    """libgomp's threads do not survive fork(): after the parent has run a team, a child that
    opened one would wait for them forever. pybn runs on one thread in a forked child, with
    the same results."""
    inputs = random_inputs(rng, (8, 32, 64, 65))  # large enough for a team of threads
    y_parent = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
    threads_parent = pybn.info()["omp_threads"]

    def child():
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
        return pybn.info()["omp_threads"] == 1 and y.tobytes() == y_parent.tobytes()

    assert threads_parent >= 1
    assert run_in_fork(child)


@pytest.fixture
def restore_num_threads():
    yield
    pybn.set_num_threads(0)


def test_set_num_threads_setting_and_errors(restore_num_threads):
    default = pybn.get_num_threads()
    assert default >= 1 and pybn.info()["omp_threads"] == default
    pybn.set_num_threads(3)
    assert pybn.get_num_threads() == 3 and pybn.info()["omp_threads"] == 3
    seen = []
    worker = threading.Thread(target=lambda: seen.append(pybn.get_num_threads()))
    worker.start()
    worker.join()
    assert seen == [3]  # for every thread of the process, not only the caller
    for bad, error in ((-1, ValueError), (2**31, ValueError), (1.5, TypeError), ("2", TypeError)):
        with pytest.raises(error):
            pybn.set_num_threads(bad)
        assert pybn.get_num_threads() == 3  # a rejected call changes nothing
    pybn.set_num_threads(1)
    assert pybn.get_num_threads() == 1
    pybn.set_num_threads(0)
    assert pybn.get_num_threads() == default


def test_set_num_threads_gives_way_to_fork(rng, restore_num_threads):
    inputs = random_inputs(rng, (8, 32, 64, 65))
    pybn.set_num_threads(3)
    y_parent = pybn.batch_norm(**inputs, fix_gamma=False, training=False)

    def child():
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
        return pybn.get_num_threads() == 1 and y.tobytes() == y_parent.tobytes()

    assert run_in_fork(child)


THREAD_COUNT_SCRIPT = r"""
import os, sys, numpy as np, pybn
x = np.random.default_rng(0).standard_normal((8, 64, 64, 64)).astype(np.float32)  # 2M elements
c = x.shape[1]
def run():
    pybn.batch_norm(x, np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32),
                    np.ones(c, np.float32), fix_gamma=False, training=True)
pybn.set_num_threads(int(sys.argv[1]))
before = len(os.listdir("/proc/self/task"))
run()
print(len(os.listdir("/proc/self/task")) - before, pybn.get_num_threads())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
@pytest.mark.parametrize("omp, setting, expected_new_threads", [("1", "3", 2), ("4", "1", 0), ("1", "0", 0)])
def test_set_num_threads_sets_the_team(omp, setting, expected_new_threads):
    """The setting reaches the kernels' teams, over OMP_NUM_THREADS: a fresh process's first
    call on 2M elements starts setting - 1 OpenMP threads (OpenMP's count with 0)."""
    ran = subprocess.run([sys.executable, "-c", THREAD_COUNT_SCRIPT, setting], env=dict(os.environ, OMP_NUM_THREADS=omp),
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    new_threads, threads = map(int, ran.stdout.split())
    assert threads == (int(setting) or int(omp))
    assert new_threads == expected_new_threads
