"""Outputs pybn allocates come from the C library's host memory (pybn_host_alloc): large ones
are kept when freed and handed out again, which must never change a result, a layout, or
what NumPy can do with the array. (The C-level cache rules are tested in tests/c/test_c_abi.c.)"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pybn
from conftest import random_inputs, run_in_fork
from reference import assert_close, backward_reference, forward_reference

try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import get_handler_name

MIN_BYTES = pybn._core.HOST_CACHE_MIN_BYTES
# float32 tensors just past the threshold (4 MiB + one channel row)
LARGE_SHAPE = (8, 32, 64, 65)


@pytest.fixture
def cache_limit():
    """A known limit for the test, restored after it."""
    before = pybn.host_cache_limit()
    pybn.set_host_cache_limit(256 << 20)
    pybn.release_host_cache()
    yield
    pybn.set_host_cache_limit(before)


def test_threshold_is_the_headers():
    assert MIN_BYTES == 4 << 20
    assert np.prod(LARGE_SHAPE) * 4 > MIN_BYTES


def test_reused_block_is_fully_rewritten(rng, cache_limit):
    """The second output takes the first one's block, still full of the NaNs written into it,
    and every element of it is the new call's result."""
    for training in (True, False):
        inputs = random_inputs(rng, LARGE_SHAPE)
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=training)
        assert get_handler_name(y) == "pybn_host" and y.flags.owndata
        y.fill(np.nan)
        address = y.ctypes.data
        del y
        assert pybn.host_cache_bytes() >= np.prod(LARGE_SHAPE) * 4

        inputs = random_inputs(rng, LARGE_SHAPE, loc_range=50.0)
        expected = forward_reference(**inputs, fix_gamma=False, training=training)
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=training)
        assert y.ctypes.data == address
        assert pybn.host_cache_bytes() == 0
        assert_close(y, expected["y"], what=f"y (training={training}) in a reused block")
        del y


def test_reused_block_backward(rng, cache_limit):
    inputs = random_inputs(rng, LARGE_SHAPE)
    x = inputs["data"]
    _, mean, invstd = pybn.batch_norm(**inputs, fix_gamma=False, output_mean_var=True)
    dx, _, _ = pybn.batch_norm_backward(rng.standard_normal(x.shape).astype(x.dtype), x,
                                        inputs["gamma"], mean, invstd, fix_gamma=False)
    dx.fill(np.inf)
    address = dx.ctypes.data
    del dx
    dy = rng.standard_normal(x.shape).astype(x.dtype)
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, x, inputs["gamma"], mean, invstd,
                                                 fix_gamma=False)
    assert dx.ctypes.data == address and get_handler_name(dx) == "pybn_host"
    dx_ref, dgamma_ref, dbeta_ref = backward_reference(dy, x, inputs["gamma"], mean, invstd,
                                                       fix_gamma=False)
    assert_close(dx, dx_ref, what="dx in a reused block")
    assert_close(dgamma, dgamma_ref, what="dgamma")
    assert_close(dbeta, dbeta_ref, what="dbeta")


class Sub(np.ndarray):
    pass


@pytest.mark.parametrize("case", ["c", "f", "channels_last", "negative", "sliced", "subclass",
                                  "dtype", "small", "empty"])
def test_layout_is_empty_likes(case):
    """host_empty_like gives what np.empty_like gives (type, dtype, shape, strides), from
    pybn's memory exactly when it is large."""
    dtype = None
    base = np.zeros(LARGE_SHAPE, np.float32)
    prototype = {
        "c": base,
        "f": np.asfortranarray(base),
        "channels_last": np.moveaxis(np.zeros((8, 64, 65, 32), np.float32), 3, 1),
        "negative": base[:, ::-1, :, ::-1],
        "sliced": np.zeros((8, 32, 64, 130), np.float32)[..., ::2],
        "subclass": base.view(Sub),
        "dtype": base,
        "small": np.zeros((4, 8, 16, 16), np.float32),
        "empty": np.zeros((0, 32, 64, 65), np.float32),
    }[case]
    if case == "dtype":
        dtype = np.float16  # half the bytes: under the threshold
    out = pybn._core.host_empty_like(prototype, dtype)
    expected = np.empty_like(prototype, dtype=dtype)
    assert type(out) is type(expected)
    assert (out.dtype, out.shape, out.strides) == (expected.dtype, expected.shape, expected.strides)
    large = expected.nbytes >= MIN_BYTES
    assert get_handler_name(out) == ("pybn_host" if large else get_handler_name(expected))
    if large:
        assert out.ctypes.data % 4096 == 0
        out[...] = 3.0  # writable, every byte
        assert np.all(out == 3.0)


@pytest.mark.parametrize("case", ["sliced", "transposed", "subclass", "small"])
def test_contiguous_copy_is_ascontiguousarrays(rng, case):
    """host_ascontiguousarray (the copy of an input the kernels cannot read as it is) gives
    np.ascontiguousarray's type, layout and values."""
    base = rng.standard_normal((8, 32, 64, 130)).astype(np.float32)
    arr = {"sliced": base[..., ::2], "transposed": base.transpose(0, 3, 1, 2)[:, ::2],
           "subclass": base[..., ::2].view(Sub), "small": base[:2, :4, :, ::2]}[case]
    out = pybn._core.host_ascontiguousarray(arr)
    expected = np.ascontiguousarray(arr)
    assert type(out) is type(expected) is np.ndarray
    assert (out.dtype, out.shape, out.strides) == (expected.dtype, expected.shape, expected.strides)
    assert np.array_equal(out, expected)
    assert get_handler_name(out) == ("pybn_host" if expected.nbytes >= MIN_BYTES
                                     else get_handler_name(expected))


def test_input_copy_goes_back_to_the_cache(rng, cache_limit):
    """A non-dense input is copied for the kernels; the copy's block is idle after the call and
    serves the next one. The result is right either way."""
    wide = random_inputs(rng, LARGE_SHAPE[:3] + (2 * LARGE_SHAPE[3],))
    inputs = dict(wide, data=wide["data"][..., ::2])
    expected = forward_reference(**inputs, fix_gamma=False, training=False)["y"]
    for _ in range(2):
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
        assert pybn.host_cache_bytes() >= inputs["data"].nbytes  # the copy, given back
        assert_close(y, expected, what="y of a non-dense input")
        del y


def test_resize_keeps_contents(cache_limit):
    """ndarray.resize goes through the handler's realloc: across the threshold both ways."""
    a = pybn._core.host_empty_like(np.zeros(LARGE_SHAPE, np.float32))
    values = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    a[...] = values
    a.resize((a.size * 3,), refcheck=False)
    assert np.array_equal(a[:values.size], values.reshape(-1))
    a.resize((1000,), refcheck=False)
    assert np.array_equal(a, values.reshape(-1)[:1000])
    a.resize((MIN_BYTES // 4 + 5,), refcheck=False)
    assert np.array_equal(a[:1000], values.reshape(-1)[:1000])


def test_limit_zero_keeps_nothing(rng, cache_limit):
    pybn.set_host_cache_limit(0)
    assert pybn.host_cache_limit() == 0
    inputs = random_inputs(rng, LARGE_SHAPE)
    y = pybn.batch_norm(**inputs, fix_gamma=False)
    assert get_handler_name(y) == "pybn_host"
    assert_close(y, forward_reference(**inputs, fix_gamma=False)["y"], what="y, cache off")
    del y
    assert pybn.host_cache_bytes() == 0


def test_limit_and_release(rng, cache_limit):
    y = pybn.batch_norm(**random_inputs(rng, LARGE_SHAPE), fix_gamma=False)
    del y
    idle = pybn.host_cache_bytes()
    assert idle >= np.prod(LARGE_SHAPE) * 4
    assert pybn.info()["host_cache_bytes"] == idle
    assert pybn.info()["host_cache_limit"] == 256 << 20
    pybn.set_host_cache_limit(idle - 1)  # below what is idle: the block goes
    assert pybn.host_cache_bytes() == 0
    pybn.set_host_cache_limit(256 << 20)
    y = pybn.batch_norm(**random_inputs(rng, LARGE_SHAPE), fix_gamma=False)
    del y
    assert pybn.host_cache_bytes() == idle
    pybn.release_host_cache()
    assert pybn.host_cache_bytes() == 0
    with pytest.raises(ValueError, match=">= 0"):
        pybn.set_host_cache_limit(-1)
    with pytest.raises(TypeError):
        pybn.set_host_cache_limit(1.5)


@pytest.mark.parametrize("value, expected", [("0", 0), ("7", 7 << 20), ("", 1024 << 20),
                                             ("lots", 1024 << 20)])
def test_limit_from_environment(value, expected):
    env = dict(os.environ, PYBN_HOST_CACHE_MB=value)
    result = subprocess.run([sys.executable, "-c", "import pybn; print(pybn.host_cache_limit())"],
                            env=env, capture_output=True, text=True, check=True)
    assert int(result.stdout) == expected


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_uses_the_cache(rng, cache_limit):
    """Children forked while another thread allocates and frees (the cache's lock is held
    across each fork and released on both sides) allocate, reuse and compute normally."""
    inputs = random_inputs(rng, LARGE_SHAPE)
    expected = forward_reference(**inputs, fix_gamma=False, training=False)["y"]
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            pybn._core.host_empty_like(inputs["data"])

    def child():
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
        address = y.ctypes.data
        del y
        y = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
        return y.ctypes.data == address and bool(np.allclose(y, expected, atol=1e-4))

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(3):
            assert run_in_fork(child)
    finally:
        stop.set()
        worker.join()


def test_threads_share_the_cache(cache_limit):
    """Threads allocating and freeing large outputs at once each get a block of their own."""
    errors = []

    def work(seed):
        local = np.random.default_rng(seed)
        try:
            for _ in range(6):
                inputs = random_inputs(local, LARGE_SHAPE)
                y = pybn.batch_norm(**inputs, fix_gamma=False, training=False)
                expected = forward_reference(**inputs, fix_gamma=False, training=False)["y"]
                assert_close(y, expected, what=f"thread {seed}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
