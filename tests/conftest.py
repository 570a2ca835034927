"""pytest set-up for pybn's Python tests.

The tests exercise the *installed* pybn (``pip install .``). The package source lives under
``src/``, so nothing in the repository root can shadow the installed package.
"""

import os
import sys
import zlib

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# reference.py sits next to the tests, whatever pytest's import mode.
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from reference import param_dtype  # noqa: E402

DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes seconds, not milliseconds (still run by "
                                       "default; deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device (skipped otherwise)")


def resolve_dtype(name):
    """NumPy dtype for a dtype name; bfloat16 comes from ml_dtypes, skipped without it."""
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip(
            "ml_dtypes", reason="bfloat16 arrays need the ml_dtypes package")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: fresh inputs per test, the same on every run.
    Set PYBN_TEST_SEED to an integer to draw a different (still reproducible) set."""
    salt = os.environ.get("PYBN_TEST_SEED", "")
    return np.random.default_rng(zlib.crc32((salt + request.node.nodeid).encode()))


def random_inputs(rng, shape, axis=1, dtype=np.float32, loc_range=3.0):
    """Data with a different mean and spread per channel, random gamma/beta and moving stats.

    Returns a dict: data, gamma, beta, moving_mean, moving_var (parameters in the parameter
    dtype of SPEC.md)."""
    dtype = np.dtype(dtype)
    pdtype = param_dtype(dtype)
    axis = axis % len(shape)
    channels = shape[axis]
    broadcast = [1] * len(shape)
    broadcast[axis] = channels
    loc = rng.uniform(-loc_range, loc_range, channels).reshape(broadcast)
    spread = rng.uniform(0.5, 2.0, channels).reshape(broadcast)
    data = (loc + spread * rng.standard_normal(shape)).astype(dtype)
    return {
        "data": data,
        "gamma": rng.uniform(0.5, 1.5, channels).astype(pdtype),
        "beta": rng.uniform(-1.0, 1.0, channels).astype(pdtype),
        "moving_mean": rng.uniform(-1.0, 1.0, channels).astype(pdtype),
        "moving_var": rng.uniform(0.5, 2.0, channels).astype(pdtype),
    }


@pytest.fixture
def make_inputs(rng):
    """random_inputs bound to this test's generator."""
    def make(shape, axis=1, dtype=np.float32, **kwargs):
        return random_inputs(rng, shape, axis=axis, dtype=dtype, **kwargs)
    return make


def poisoned(shape, dtype):
    """An output buffer full of NaN, so an element the library forgets to write shows up."""
    return np.full(shape, np.nan, dtype=dtype)


def assert_bitwise_equal(actual, expected, what=""):
    """Same dtype, shape and bytes: for "unchanged" and "bit-identical" checks (NaN included,
    and for dtypes such as bfloat16 whose NaN assert_array_equal does not recognize)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.tobytes() != expected.tobytes():
        differ = (np.ascontiguousarray(actual).view(np.uint8).reshape(actual.shape + (-1,))
                  != np.ascontiguousarray(expected).view(np.uint8).reshape(actual.shape + (-1,))
                  ).any(axis=-1)
        raise AssertionError(f"{what}: {int(differ.sum())} of {actual.size} elements differ, "
                             f"first at {np.argwhere(differ)[0].tolist()}: "
                             f"{actual[differ][:5]} != {expected[differ][:5]}")


def run_in_fork(child, timeout=60.0):
    """Run child() in a fork()ed child process; True if it returned True, False if it returned
    anything else, raised, or was still running after `timeout` seconds (then it is killed,
    so that a hang fails the test instead of stopping the suite)."""
    import time

    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = child() is True
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return False


def load_and_unlink(path):
    """A worker's results saved at `path` (np.savez), read as they are used, with the file's name
    removed: the open file keeps them readable, and its 100-400 MB go back to the disk once the
    results are dropped rather than when pytest deletes its temporary directories (it keeps the
    last three runs': the workers of test_isa.py alone wrote 12 GB a run)."""
    results = np.load(path)
    os.unlink(path)
    return results
