"""Shapes chosen to reach each CPU kernel path and its edges (kernels.inc), against the float64
reference: short inner sizes (normalization as one flat pass in memory order, where a vector
of the compute type holds two channels), flat work items that start inside a channel, the wrap
from the last channel of one outer index to channel 0 of the next, and outputs over the
4 MB from which the kernels write with streaming stores."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import pybn
from conftest import (DTYPE_NAMES, assert_bitwise_equal, load_and_unlink, poisoned, random_inputs,
                      resolve_dtype)
from reference import assert_close, assert_gradients_close, forward_reference


def _forward(inputs, fix_gamma=False, **flags):
    out = poisoned(inputs["data"].shape, inputs["data"].dtype)
    state = {k: v.copy() for k, v in inputs.items()}
    y, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"], out=out,
                                      output_mean_var=True, fix_gamma=fix_gamma, **flags)
    assert np.shares_memory(y, out)
    return y, mean, invstd, state


# inner sizes around the vector widths (4, 8, 16 lanes of float32; 2, 4, 8 of float64) and
# the long-run threshold (512; in few rows long runs start at 64 elements, 32 in float64, and
# take some of these shapes, uses_long_runs); channel counts that make rows end mid-vector.
@pytest.mark.parametrize("inner", [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 49, 63, 64, 65, 196, 511])
@pytest.mark.parametrize("channels", [1, 2, 5, 37])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_short_inner(make_inputs, dtype_name, channels, inner):
    dtype = resolve_dtype(dtype_name)
    outer = max(2, 70000 // (channels * inner) + 1)  # more than one 65536-element work item
    inputs = make_inputs((outer, channels, inner), axis=1, dtype=dtype)
    for flags in (dict(training=False), dict(training=True, use_global_stats=True),
                  dict(training=True)):
        y, mean, invstd, state = _forward(inputs, **flags)
        expected = forward_reference(**inputs, fix_gamma=False, **flags)
        assert_close(y, expected["y"], what=f"y {flags}")
        assert_close(mean, expected["mean"], what="mean")
        assert_close(invstd, expected["invstd"], what="invstd")


@pytest.mark.parametrize("dtype_name", ["float16", "float32"])
@pytest.mark.parametrize("shape", [(128, 64, 512), (520, 256, 33)])  # 7x7-like and NCHW-like
@pytest.mark.parametrize("training", [False, True])
def test_streamed_outputs(make_inputs, dtype_name, shape, training):
    dtype = resolve_dtype(dtype_name)
    size = np.prod(shape) * np.dtype(dtype).itemsize
    assert size >= 4 << 20  # kStreamBytes in kernels.inc
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    y, mean, invstd, state = _forward(inputs, training=training)
    expected = forward_reference(**inputs, fix_gamma=False, training=training)
    assert_close(y, expected["y"], what="y")
    assert_close(mean, expected["mean"], what="mean")


# Tensors of 64 MB or more: each thread prefetches its next channel (kNextItemMinBytes,
# kPrefetchItemBytes in kernels.inc) while normalizing the current one, one channel per work
# item: whole channels of 256 KB, or the first 6 of 8 runs of 512 KB channels (a float32 run
# of 64 KB). Odd channel counts leave the threads unequal counts of items.
@pytest.mark.parametrize("dtype_name,shape", [("float32", (16, 257, 64, 64)), ("float64", (8, 257, 64, 64)),
                                              ("float32", (8, 129, 128, 128))])
def test_large_tensor_long_runs(make_inputs, dtype_name, shape):
    dtype = resolve_dtype(dtype_name)
    assert np.prod(shape) * np.dtype(dtype).itemsize >= 64 << 20
    _check_training_forward(make_inputs(shape, axis=1, dtype=dtype))


# Large tensors whose channels (up to 400 KB) are normalized while the thread's next item is
# summed (normalize_chunk_with_next_moments): runs of 3000 and 4111 elements, so that pieces end
# mid-run and reduction chunks start mid-run; one channel an item (13 channels: the threads'
# last items differ in count) and two; x and y at different positions in a line. Larger
# channels (float64 782 KB, float32 480 KB) are split between two threads (shared_channels)
# when two threads run, each thread summing and normalizing half of the chunks of every
# channel; so are items of two or four channels whose runs are short (784 elements: float32
# and float64 channels of 400 KB, float32 of 200 KB; 2048: float32 channels of 192 KB). Runs
# of 8-128 KB (kInterleaveMinRunBytes, kInterleaveMaxRunBytes) are summed four at a time, a
# 512-byte piece of each in turn (for_each_run_group): runs of 2047 and 2048 float32 elements
# sit on either side of the first bound, of 40000 past the second. The last two: few rows of
# short runs, which go by long runs too (uses_long_runs), streamed. 16-bit types (one run at a
# time whatever its length): float16 runs of 6000 (not a whole number of the reduction's
# steps), items of two channels (1500), bfloat16 runs of 9001.
# The backward of the same tensors: where one channel's x and dy take 64-800 KB, a thread sums
# its next channel while it writes dx of the current one (Backward::overlaps_channels).
SUMMED_ALONGSIDE = [("float32", (32, 13, 3000)), ("float32", (12, 26, 4111)), ("float64", (16, 13, 6111)),
                    ("float32", (24, 10, 5000)), ("float32", (128, 16, 784)), ("float64", (64, 12, 784)),
                    ("float32", (64, 24, 784)), ("float32", (48, 12, 2047)), ("float32", (48, 12, 2048)),
                    ("float32", (24, 30, 2048)), ("float32", (2, 20, 40000)), ("float32", (2, 4096, 128)),
                    ("float64", (1, 16384, 32)), ("float16", (32, 13, 6000)), ("float16", (64, 24, 1500)),
                    ("bfloat16", (20, 12, 9001))]

# The same tensors with streaming stores off, in a subprocess (PYBN_CPU_STREAM_STORES is read
# once per process): then no item is summed alongside another's normalization and no channel
# is shared; a thread sums each of its items on its own (chunk_moments). Saves y, mean, invstd
# and the moving statistics of case i as i_y, i_mean, ...
UNSTREAMED_WORKER = r"""
import sys, numpy as np, pybn
sys.path.insert(0, sys.argv[2])
from conftest import random_inputs
from test_kernel_paths import SUMMED_ALONGSIDE, summed_alongside_dy, summed_alongside_inputs
seed, results = int(sys.argv[3]), {}
for index, (dtype, shape) in enumerate(SUMMED_ALONGSIDE):
    inputs = summed_alongside_inputs(seed, index)
    stats = [inputs[k].copy() for k in ("moving_mean", "moving_var")]
    y, mean, invstd = pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"], *stats,
                                      output_mean_var=True, fix_gamma=False)
    dx, dgamma, dbeta = pybn.batch_norm_backward(summed_alongside_dy(seed, index), inputs["data"], inputs["gamma"],
                                                 mean, invstd, fix_gamma=False)
    for name, value in dict(y=y, mean=mean, invstd=invstd, moving_mean=stats[0], moving_var=stats[1], dx=dx,
                            dgamma=dgamma, dbeta=dbeta).items():
        # 16-bit arrays as their bits (np.savez keeps no bfloat16)
        results[f"{index}_{name}"] = value.view(np.uint16) if value.dtype.itemsize == 2 else value
np.savez(sys.argv[1], **results)
"""


def summed_alongside_inputs(seed, index, cases=None):
    """Inputs of case `index` of `cases` (SUMMED_ALONGSIDE by default) from `seed`; each
    element scaled by 10**U(0, 3), so that sums in another order come out in other bits (with
    plain normal data they mostly do not)."""
    dtype_name, shape = (cases or SUMMED_ALONGSIDE)[index][:2]
    dtype = resolve_dtype(dtype_name)
    rng = np.random.default_rng([seed, index])
    inputs = random_inputs(rng, shape, axis=1, dtype=dtype)
    inputs["data"] = (inputs["data"] * 10.0 ** rng.uniform(0.0, 3.0, shape)).astype(dtype)
    return inputs


def summed_alongside_dy(seed, index):
    """dy for the backward of case `index` of SUMMED_ALONGSIDE, from `seed`."""
    dtype_name, shape = SUMMED_ALONGSIDE[index]
    rng = np.random.default_rng([seed, index, 1])
    return rng.standard_normal(shape).astype(resolve_dtype(dtype_name))


@pytest.fixture(scope="module")
def unstreamed(tmp_path_factory):
    """(seed, results of UNSTREAMED_WORKER for inputs from that seed): a fresh seed each run."""
    seed = int(np.random.SeedSequence().entropy % (1 << 63))
    path = tmp_path_factory.mktemp("unstreamed") / "results.npz"
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYBN_CPU_STREAM_STORES="0")
    subprocess.run([sys.executable, "-c", UNSTREAMED_WORKER, str(path), here, str(seed)], env=env, check=True,
                   cwd=str(path.parent))
    return seed, load_and_unlink(path)


def _long_runs_interleaved(dtype, shape):
    """Whether the reduction takes four runs at a time (Forward::reduction_runs)."""
    run_bytes = shape[2] * np.dtype(dtype).itemsize
    return np.dtype(dtype).itemsize >= 4 and 8192 <= run_bytes <= 131072


def _saved(other, key, like):
    """Array `key` of the unstreamed worker's results, as the dtype of `like` (16-bit types
    were saved as their bits)."""
    value = other[key]
    return value.view(like.dtype) if like.dtype.itemsize == 2 else value


def _summed_alongside_case(unstreamed, case):
    """(dtype, shape, seed, the unstreamed worker's results, inputs) of SUMMED_ALONGSIDE[case]."""
    dtype_name, shape = SUMMED_ALONGSIDE[case]
    seed, other = unstreamed
    return resolve_dtype(dtype_name), shape, seed, other, summed_alongside_inputs(seed, case)


# Every channel must come out bit-identical to the same tensor with streaming stores off (above)
# and, where the runs are summed one after another, to the same channels taken two at a time
# in a tensor small enough to stay in cache (another path again; two, because a tensor of one
# channel is read as one contiguous run, which sums in another order). Runs summed four at a
# time from memory are summed one after another in cache, in other bits.
@pytest.mark.parametrize("case", range(len(SUMMED_ALONGSIDE)))
def test_items_summed_while_normalizing_match_other_paths(unstreamed, case):
    dtype, shape, seed, other, inputs = _summed_alongside_case(unstreamed, case)
    data = _at_offset(inputs["data"], 3)
    assert data.nbytes >= 4 << 20  # streamed (kStreamBytes in kernels.inc)
    out = _at_offset(poisoned(shape, dtype), 7)
    moving_mean, moving_var = inputs["moving_mean"].copy(), inputs["moving_var"].copy()
    y, mean, invstd = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], moving_mean, moving_var,
                                      out=out, output_mean_var=True, fix_gamma=False)
    expected = forward_reference(**inputs, fix_gamma=False, training=True)
    assert_close(y, expected["y"], what="y")
    assert_close(mean, expected["mean"], what="mean")
    assert_close(invstd, expected["invstd"], what="invstd")
    for name, value in dict(y=y, mean=mean, invstd=invstd, moving_mean=moving_mean, moving_var=moving_var).items():
        assert_bitwise_equal(value, _saved(other, f"{case}_{name}", value), what=f"{name} against streaming stores off")
    if _long_runs_interleaved(dtype, shape):
        return
    channels = shape[1]
    for first in range(0, channels, 2):
        pair = slice(min(first, channels - 2), min(first, channels - 2) + 2)
        part = np.ascontiguousarray(inputs["data"][:, pair])
        assert part.nbytes < 4 << 20  # not streamed
        stats = [inputs[k][pair].copy() for k in ("moving_mean", "moving_var")]
        y_part, mean_part, invstd_part = pybn.batch_norm(part, inputs["gamma"][pair], inputs["beta"][pair],
                                                         *stats, output_mean_var=True, fix_gamma=False)
        what = f"channels {pair.start}-{pair.stop - 1}"
        assert_bitwise_equal(y[:, pair], y_part, what=f"y of {what}")
        assert_bitwise_equal(mean[pair], mean_part, what=f"mean of {what}")
        assert_bitwise_equal(invstd[pair], invstd_part, what=f"invstd of {what}")
        assert_bitwise_equal(moving_mean[pair], stats[0], what=f"moving_mean of {what}")
        assert_bitwise_equal(moving_var[pair], stats[1], what=f"moving_var of {what}")


# The backward of the same tensors, dx at an offset in a line: against the reference, and bit
# for bit against streaming stores off (each channel summed, then written, by one thread).
@pytest.mark.parametrize("case", range(len(SUMMED_ALONGSIDE)))
def test_channels_summed_while_writing_dx_match_unstreamed(unstreamed, case):
    dtype, shape, seed, other, inputs = _summed_alongside_case(unstreamed, case)
    data = inputs["data"]
    _, mean, invstd = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], inputs["moving_mean"].copy(),
                                      inputs["moving_var"].copy(), output_mean_var=True, fix_gamma=False)
    dy = _at_offset(summed_alongside_dy(seed, case), 5)
    dx = _at_offset(poisoned(shape, dtype), 3)
    dgamma = np.full(shape[1], np.nan, mean.dtype)
    dbeta = np.full(shape[1], np.nan, mean.dtype)
    pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, fix_gamma=False, dx=dx, dgamma=dgamma,
                             dbeta=dbeta)
    assert_gradients_close((dx, dgamma, dbeta), dy, data, inputs["gamma"], mean, invstd, fix_gamma=False)
    for name, value in dict(dx=dx, dgamma=dgamma, dbeta=dbeta).items():
        assert_bitwise_equal(value, _saved(other, f"{case}_{name}", value), what=f"{name} against streaming stores off")


def _check_training_forward(inputs):
    """Training forward of `inputs` (y, mean, invstd, the moving statistics) against the
    reference; returns pybn's (mean, invstd)."""
    y, mean, invstd, state = _forward(inputs, training=True)
    expected = forward_reference(**inputs, fix_gamma=False, training=True)
    for name, value in (("y", y), ("mean", mean), ("invstd", invstd),
                        ("moving_mean", state["moving_mean"]), ("moving_var", state["moving_var"])):
        assert_close(value, expected[name], what=name)
    return mean, invstd


def _check_training_and_backward(inputs, rng):
    """Training forward (y, mean, invstd, moving statistics) and backward (dx, dgamma, dbeta)
    of `inputs` against the reference."""
    data = inputs["data"]
    mean, invstd = _check_training_forward(inputs)
    dy = rng.standard_normal(data.shape).astype(data.dtype)
    dx = poisoned(data.shape, data.dtype)
    dgamma = np.full(data.shape[1], np.nan, mean.dtype)
    dbeta = np.full(data.shape[1], np.nan, mean.dtype)
    pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, fix_gamma=False,
                             dx=dx, dgamma=dgamma, dbeta=dbeta)
    assert_gradients_close((dx, dgamma, dbeta), dy, data, inputs["gamma"], mean, invstd,
                           fix_gamma=False)


# Few rows of runs of 64 elements or more (32 in float64) go by long runs (uses_long_runs in
# kernels.inc: rows * 16 <= inner), and runs of 32 or more (16 in float64) in rows * 24 <= inner
# (in the backward rows * 6 <= inner, rows * 12 for 16-bit types); more rows by the row
# layout: shapes on both sides of those lines, one channel and many, and tensors of several
# work items (two threads share them), all checked against the float64 model (which path ran
# is not observed here).
@pytest.mark.parametrize("shape", [(1, 5, 64), (4, 3, 64), (5, 3, 64), (1, 300, 65), (2, 7, 200),
                                   (12, 4, 196), (13, 4, 196), (8, 40, 300), (1, 1, 100),
                                   (2, 5, 32), (3, 5, 32), (3, 4, 49), (1, 300, 33),
                                   (1, 5, 32), (2, 5, 48), (2, 5, 47), (2, 300, 49), (1, 6, 24),
                                   (1, 6, 23), (1, 40, 16), (1, 1, 17), (4, 40, 49), (5, 40, 49),
                                   (3, 9, 36), (8, 40, 49), (9, 40, 49)])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_few_rows_of_long_runs(make_inputs, rng, dtype_name, shape):
    _check_training_and_backward(make_inputs(shape, axis=1, dtype=resolve_dtype(dtype_name)), rng)


# Small channels by long runs go up to 8 to a work item: the forward writes a 16-bit item's
# short runs as one span, the backward finalizes the item's channels together and writes their
# dx as one span (vectors holding two channels). Here under grad_req "add" and with the moving
# statistics too, onto random dx / dgamma / dbeta; channel counts that leave a shorter last item.
@pytest.mark.parametrize("flags", [dict(training=True), dict(training=True, use_global_stats=True)],
                         ids=["batch", "use_global_stats"])
@pytest.mark.parametrize("shape", [(1, 64, 7, 7), (2, 40, 6, 6), (1, 37, 5, 5), (1, 45, 4, 8)])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_small_channels_in_items_add(make_inputs, rng, dtype_name, shape, flags):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    y, mean, invstd, _ = _forward(inputs, **flags)
    expected = forward_reference(**inputs, fix_gamma=False, **flags)
    assert_close(y, expected["y"], what="y")
    if flags.get("use_global_stats"):
        mean, invstd = expected["mean"].astype(mean.dtype), expected["invstd"].astype(invstd.dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    buffers = {"dx": rng.standard_normal(shape).astype(dtype),
               "dgamma": rng.standard_normal(shape[1]).astype(mean.dtype),
               "dbeta": rng.standard_normal(shape[1]).astype(mean.dtype)}
    initial = tuple(buffers[name].copy() for name in ("dx", "dgamma", "dbeta"))
    result = pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd,
                                      fix_gamma=False, grad_req="add", **flags, **buffers)
    assert_gradients_close(result, dy, inputs["data"], inputs["gamma"], mean, invstd,
                           fix_gamma=False, initial=initial, **flags)


def _past_line(array, offset):
    """A copy of `array` starting `offset` elements past a 64-byte line boundary."""
    itemsize = array.dtype.itemsize
    storage = np.full(array.size + 2 * 64 // itemsize + offset, np.nan, dtype=array.dtype)
    start = (-storage.ctypes.data % 64) // itemsize + offset
    view = storage[start:start + array.size].reshape(array.shape)
    view[...] = array
    return view


def _at_offset(array, offset):
    """A copy of `array` starting `offset` elements into a fresh buffer (NumPy's own large
    buffers start 16 bytes past a 64-byte boundary; this reaches the other positions)."""
    storage = np.full(array.size + 64, np.nan, dtype=array.dtype)
    view = storage[offset:offset + array.size].reshape(array.shape)
    view[...] = array
    return view


# Streamed outputs starting anywhere in a 64-byte line, runs of 1031 elements (every run then
# starts at another position): the scalar head before the first streaming store, streamed
# pairs of 16-bit vectors (AVX-512), a last single vector, the scalar tail.
@pytest.mark.parametrize("offset", [0, 1, 8, 13, 24])
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32"])
def test_streamed_outputs_at_any_alignment(make_inputs, rng, dtype_name, offset):
    dtype = resolve_dtype(dtype_name)
    shape = (32 if np.dtype(dtype).itemsize == 2 else 16, 64, 1031)
    assert np.prod(shape) * np.dtype(dtype).itemsize >= 4 << 20  # kStreamBytes in kernels.inc
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    out = _at_offset(poisoned(shape, dtype), offset)
    y, mean, invstd = pybn.batch_norm(inputs["data"], inputs["gamma"], inputs["beta"],
                                      inputs["moving_mean"].copy(), inputs["moving_var"].copy(),
                                      out=out, output_mean_var=True, fix_gamma=False)
    expected = forward_reference(**inputs, fix_gamma=False, training=True)
    assert_close(out, expected["y"], what="y")
    dy = rng.standard_normal(shape).astype(dtype)
    dx = _at_offset(poisoned(shape, dtype), (offset + 5) % 32)
    pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd, fix_gamma=False,
                             dx=dx)
    assert_gradients_close((dx, None, None), dy, inputs["data"], inputs["gamma"], mean, invstd,
                           fix_gamma=False)


def _check_against_reference(inputs, dy0, got):
    """A training call's y, statistics and moving statistics, the inference y with the moving
    statistics it left, and the backward's dx, dgamma and dbeta (for dy0) in `got`, against the
    float64 reference."""
    expected = forward_reference(**inputs, fix_gamma=False, training=True)
    for name in ("y", "mean", "invstd", "moving_mean", "moving_var"):
        assert_close(got[name], expected[name], what=name)
    expected_infer = forward_reference(inputs["data"], inputs["gamma"], inputs["beta"], got["moving_mean"],
                                       got["moving_var"], fix_gamma=False, training=False)
    assert_close(got["y_infer"], expected_infer["y"], what="y (inference)")
    assert_gradients_close((got["dx"], got["dgamma"], got["dbeta"]), dy0, inputs["data"],
                           inputs["gamma"], got["mean"], got["invstd"], fix_gamma=False)


def _check_placements(inputs, dy0, placements):
    """Training forward, inference and backward with x and dy `x_at` elements past a 64-byte
    line, y and dx `y_at` past one, for each (x_at, y_at) in placements (the first (0, 0)): every
    output the same bits as at (0, 0), which is checked against the float64 reference."""
    shape, dtype = inputs["data"].shape, inputs["data"].dtype
    results = {}
    for x_at, y_at in placements:
        data, dy = _past_line(inputs["data"], x_at), _past_line(dy0, x_at)
        moving = inputs["moving_mean"].copy(), inputs["moving_var"].copy()
        y, mean, invstd = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], *moving,
                                          out=_past_line(poisoned(shape, dtype), y_at),
                                          output_mean_var=True, fix_gamma=False)
        y_infer = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], *moving, training=False,
                                  out=_past_line(poisoned(shape, dtype), y_at), fix_gamma=False)
        dx = _past_line(poisoned(shape, dtype), y_at)
        _, dgamma, dbeta = pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd,
                                                    fix_gamma=False, dx=dx)
        results[x_at, y_at] = dict(y=y, mean=mean, invstd=invstd, moving_mean=moving[0], moving_var=moving[1],
                                   y_infer=y_infer, dx=dx, dgamma=dgamma, dbeta=dbeta)
    base = results[0, 0]
    _check_against_reference(inputs, dy0, base)
    for key, got in results.items():
        for name, value in got.items():
            assert_bitwise_equal(value, base[name], what=f"{name}, x and dy at {key[0]}, y and dx at {key[1]}")


# Streamed row layouts (7x7 maps, blocks of channels, large enough to stream): the blocks are
# fitted to the output's lines and the coefficient arrays laid out to match wherever x lies
# (aligned_writes: streamed outputs align to themselves). Where x, dy, y and dx lie moves the
# blocks' boundaries, never a bit: each placement (elements past a line) against (0, 0), which
# is checked against the float64 reference; float32 and float64 normalize alongside the next
# block's statistics, float16 block after block.
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
def test_streamed_row_layout_at_any_placement(make_inputs, rng, dtype_name):
    dtype = resolve_dtype(dtype_name)
    shape = (96 if dtype.itemsize == 2 else 48, 512, 7, 7)
    assert np.prod(shape) * dtype.itemsize >= 4 << 20  # kStreamBytes in kernels.inc
    blocks, per_block = _row_blocks(shape[1], 49, dtype)
    assert blocks >= 4 and shape[0] * per_block * 49 * dtype.itemsize * 2 <= 1 << 20  # fused (x and dy)
    _check_placements(make_inputs(shape, axis=1, dtype=dtype), rng.standard_normal(shape).astype(dtype),
                      ((0, 0), (0, 4), (4, 0), (3, 13), (2, 2)))


# Streamed 2-D rows (one block: statistics by row groups, then a flat pass whose per-position
# coefficient arrays are laid out for the output's lines wherever x lies), the same way.
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_streamed_rows_at_any_placement(make_inputs, rng, dtype_name):
    dtype = resolve_dtype(dtype_name)
    shape = (4096 if dtype.itemsize == 2 else 2048, 512)
    assert np.prod(shape) * dtype.itemsize >= 4 << 20  # kStreamBytes in kernels.inc
    assert _row_blocks(shape[1], 1, dtype)[0] == 1
    _check_placements(make_inputs(shape, axis=1, dtype=dtype), rng.standard_normal(shape).astype(dtype),
                      ((0, 0), (0, 4), (4, 0), (3, 13), (2, 2)))


def _misaligned(array):
    """A copy of `array` one byte past an element boundary (NumPy allows such arrays; the
    kernels must read them and write them without streaming stores, which need alignment)."""
    storage = np.zeros(array.nbytes + array.itemsize, dtype=np.uint8)
    view = np.frombuffer(storage.data, dtype=array.dtype, count=array.size, offset=1).reshape(array.shape)
    view[...] = array
    assert not view.flags.aligned
    return view


# Inputs and outputs not aligned to their element size, large enough to be streamed if they
# were: NCHW-like long runs, short inner (7x7-like) and channel-last rows.
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("shape,axis", [((16, 64, 1031), 1), ((40, 1024, 49), 1), ((2048, 512), 1)])
def test_misaligned_arrays(make_inputs, rng, dtype_name, shape, axis):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=axis, dtype=dtype)
    data, gamma, beta = (_misaligned(inputs[k]) for k in ("data", "gamma", "beta"))
    for training in (True, False):
        out = _misaligned(poisoned(shape, dtype))
        moving_mean, moving_var = _misaligned(inputs["moving_mean"]), _misaligned(inputs["moving_var"])
        y, mean, invstd = pybn.batch_norm(data, gamma, beta, moving_mean, moving_var, out=out,
                                          output_mean_var=True, fix_gamma=False, training=training)
        expected = forward_reference(**inputs, fix_gamma=False, training=training)
        assert_close(out, expected["y"], what=f"y (training={training})")
        assert_close(moving_var, expected["moving_var"], what=f"moving_var (training={training})")
    dy = _misaligned(rng.standard_normal(shape).astype(dtype))
    dx = _misaligned(poisoned(shape, dtype))
    dgamma, dbeta = (_misaligned(np.full(shape[1], np.nan, mean.dtype)) for _ in range(2))
    pybn.batch_norm_backward(dy, data, gamma, _misaligned(mean), _misaligned(invstd),
                             fix_gamma=False, dx=dx, dgamma=dgamma, dbeta=dbeta)
    assert_gradients_close((dx, dgamma, dbeta), dy, inputs["data"], inputs["gamma"], mean, invstd,
                           fix_gamma=False)


# Outputs small enough to stay in cache (no streaming stores), starting anywhere in a vector:
# where the ISA has masked stores the kernels write the head up to the output's first vector
# boundary with one and every later vector whole, and flat passes lay their coefficient
# arrays out to match (write_elements, aligned_writes and coeff_lead in kernels.inc), where the
# inputs start at the same position in a vector as the output (16-bit outputs of one input:
# always, their input then read across lines). Where the buffers start must not
# change a bit: every offset, of the output alone or of inputs and output together, gives the
# bits of offset 0 (checked against the float64 reference), in place as well, and so does dx
# accumulated ("add") into a buffer at any offset.
@pytest.mark.parametrize("offset", [1, 5, 8, 15, 24, 31])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("shape,axis", [
    ((64, 48), 1),        # 2-D, one block, rows of whole vectors: one flat pass (write_flat),
                          # 16-bit types four rows at a time (write_flat_rows)
    ((130, 96), 1),       # ... groups of four rows and a last group of one to three
    ((300, 1024), 1),     # ... on two threads, work items of 64 rows
    ((64, 40), 1),        # 2-D, rows that are not
    ((43, 2100), 1),      # 2-D, several blocks: per-row passes (16-bit types: groups of four
                          # rows and a last group of three, write_block_rows)
    ((22, 4096), 1),      # 16-bit inference flat with 4096 channels (flat_inference_channels)
    ((4, 6, 600), 1),     # long runs (inner >= 512)
    ((16, 6, 7, 7), 1),   # short inner: the pass in memory order holds two channels per vector
    ((6, 5, 33), -1),     # channel-last
])
def test_outputs_in_cache_at_any_offset(make_inputs, rng, dtype_name, shape, axis, offset):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=axis, dtype=dtype)
    data = inputs["data"]

    def forward(data_buffer, out, training):
        moving = inputs["moving_mean"].copy(), inputs["moving_var"].copy()
        pybn.batch_norm(data_buffer, inputs["gamma"], inputs["beta"], *moving, out=out,
                        fix_gamma=False, training=training, axis=axis)
        return out

    for training in (True, False):
        base = forward(data, _at_offset(poisoned(shape, dtype), 0), training)
        expected = forward_reference(**inputs, fix_gamma=False, training=training, axis=axis)
        assert_close(base, expected["y"], what=f"y (training={training})")
        shifted = forward(data, _at_offset(poisoned(shape, dtype), offset), training)
        assert_bitwise_equal(shifted, base, what=f"y at offset {offset} (training={training})")
        both = forward(_at_offset(data, offset), _at_offset(poisoned(shape, dtype), offset), training)
        assert_bitwise_equal(both, base, what=f"data and y at offset {offset}")
        in_place = _at_offset(data, offset)
        forward(in_place, in_place, training)
        assert_bitwise_equal(in_place, base, what=f"in place at offset {offset}")

    _, mean, invstd = pybn.batch_norm(data, inputs["gamma"], inputs["beta"],
                                      inputs["moving_mean"].copy(), inputs["moving_var"].copy(),
                                      output_mean_var=True, fix_gamma=False, axis=axis)
    dy = rng.standard_normal(shape).astype(dtype)
    start = rng.standard_normal(shape).astype(dtype)
    grads = {}
    for at, inputs_at in ((0, 0), (offset, 0), (offset, offset)):  # dx alone, then all three
        dx = _at_offset(start, at)
        pybn.batch_norm_backward(_at_offset(dy, inputs_at), _at_offset(data, inputs_at),
                                 inputs["gamma"], mean, invstd, fix_gamma=False, axis=axis,
                                 grad_req=("add", "null", "null"), dx=dx)
        grads[at, inputs_at] = dx
    for key in ((offset, 0), (offset, offset)):
        assert_bitwise_equal(grads[key], grads[0, 0], what=f"dx added, (dx, inputs) at {key}")
    assert_gradients_close((grads[0, 0], None, None), dy, data, inputs["gamma"], mean, invstd,
                           fix_gamma=False, axis=axis, initial=(start, None, None))

    # Under global statistics dx reads dy alone (16-bit dx is then aligned to itself wherever dy
    # lies: aligned_writes); dgamma's sums still read x. dx written and added at the offset, dy
    # and data at NumPy's place, against dx at offset 0 and the float64 reference.
    for req in ("write", "add"):
        got = {}
        for at in (0, offset):
            dx = _at_offset(start if req == "add" else poisoned(shape, dtype), at)
            dgamma = np.full(shape[axis], np.nan, dtype=mean.dtype)
            pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, fix_gamma=False,
                                     use_global_stats=True, axis=axis, grad_req=(req, "write", "null"),
                                     dx=dx, dgamma=dgamma)
            got[at] = dx, dgamma
        for name, k in (("dx", 0), ("dgamma", 1)):
            assert_bitwise_equal(got[offset][k], got[0][k],
                                 what=f"{name}, global statistics, grad_req {req}, dx at {offset}")
        assert_gradients_close((got[0][0], got[0][1], None), dy, data, inputs["gamma"], mean, invstd,
                               fix_gamma=False, use_global_stats=True, axis=axis,
                               initial=(start if req == "add" else None, None, None))


def _in_page_at(array, like, apart):
    """A copy of `array` lying `apart` bytes (0-4095) past where `like` lies in its 4 KB page."""
    storage = np.empty(array.nbytes + 8192, np.uint8)
    start = (like.ctypes.data + apart - storage.ctypes.data) % 4096
    view = storage[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    view[...] = array
    return view


# 2-D data in cache with rows 4 KB apart goes strip by strip, except where the output lies
# within 256 bytes of an input in its page (strip_stores_delay_loads: each row's loads would
# wait for the row before's stores); then by the row layout. Which path runs depends on where
# the buffers lie, so the results must not: y, the statistics, the moving statistics, the
# inference y and dx (written and added) with the outputs 16 bytes past x in the page (NumPy's
# heap), on it (0) and 1 KB on (strips), bit for bit, against the float64 reference.
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_strips_and_row_layout_by_placement(make_inputs, rng, dtype_name):
    dtype = resolve_dtype(dtype_name)
    shape = (128, 4096 // dtype.itemsize)
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    data = _in_page_at(inputs["data"], inputs["data"], 0)
    dy0 = rng.standard_normal(shape).astype(dtype)
    start = rng.standard_normal(shape).astype(dtype)
    results = {}
    for apart in (16, 0, 1024, 4080):
        # dy beside dx in the page, except at 1024, where dx 1 KB from dy keeps the backward's strips
        dy = _in_page_at(dy0, data, apart if apart != 1024 else 2048)
        moving = inputs["moving_mean"].copy(), inputs["moving_var"].copy()
        y, mean, invstd = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], *moving,
                                          out=_in_page_at(poisoned(shape, dtype), data, apart),
                                          output_mean_var=True, fix_gamma=False)
        y_infer = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], *moving, training=False,
                                  out=_in_page_at(poisoned(shape, dtype), data, apart), fix_gamma=False)
        dx = _in_page_at(poisoned(shape, dtype), data, apart)
        _, dgamma, dbeta = pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd,
                                                    fix_gamma=False, dx=dx)
        dx_added = _in_page_at(start, data, apart)
        pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, fix_gamma=False,
                                 grad_req=("add", "null", "null"), dx=dx_added)
        results[apart] = dict(y=y, mean=mean, invstd=invstd, moving_mean=moving[0],
                              moving_var=moving[1], y_infer=y_infer, dx=dx, dgamma=dgamma,
                              dbeta=dbeta, dx_added=dx_added)
    base = results[16]
    _check_against_reference(inputs, dy0, base)
    assert_gradients_close((base["dx_added"], None, None), dy0, inputs["data"], inputs["gamma"],
                           base["mean"], base["invstd"], fix_gamma=False, initial=(start, None, None))
    for apart, got in results.items():
        for name, value in got.items():
            assert_bitwise_equal(value, base[name], what=f"{name}, outputs {apart} bytes past x in the page")


# (300, 6, inner): one channel block; (40 or 41, 300, 17): four blocks of 75 channels
# (rows apart in memory, read two per sweep; an odd count leaves one).
@pytest.mark.parametrize("shape", [(300, 6, 16), (300, 6, 17), (300, 6, 49), (40, 300, 17),
                                   (41, 300, 17)])
@pytest.mark.parametrize("use_global_stats", [False, True])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_backward_short_inner(make_inputs, rng, dtype_name, shape, use_global_stats):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    _, mean, invstd, _ = _forward(inputs, training=True)
    dy = rng.standard_normal(inputs["data"].shape).astype(dtype)
    dx = poisoned(dy.shape, dtype)
    dgamma = np.full(shape[1], np.nan, mean.dtype)
    dbeta = np.full(shape[1], np.nan, mean.dtype)
    pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd, fix_gamma=False,
                             use_global_stats=use_global_stats, dx=dx, dgamma=dgamma,
                             dbeta=dbeta)
    assert_gradients_close((dx, dgamma, dbeta), dy, inputs["data"], inputs["gamma"], mean,
                           invstd, fix_gamma=False, use_global_stats=use_global_stats)


# Long runs (inner >= 512) read several adjacent channels per work item when their slices are
# small: 66 channels (a last, shorter group), and 40 x 1031 items per channel (two reduction
# chunks of 32768, the boundary inside a run); runs of 560 and 600 end in partial iterations
# of the reduction loop.
@pytest.mark.parametrize("shape", [(3, 66, 600), (40, 18, 1031), (5, 12, 560)])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_long_runs_in_channel_groups(make_inputs, dtype_name, shape):
    _check_training_forward(make_inputs(shape, axis=1, dtype=resolve_dtype(dtype_name)))


def _block_positions(dtype):
    """block_positions in kernels.inc: 2048 positions of 16-bit types, 1024 of float32, 512 of
    float64 (8 KB of compute-type values per position array, 4 KB of each input's row)."""
    itemsize = np.dtype(dtype).itemsize
    return min(8192 // (8 if itemsize == 8 else 4), 4096 // itemsize)


def _line_period(channels, inner, dtype):
    """LineGrid's period in kernels.inc: the fewest channels whose positions fill whole 64-byte
    lines, where a row is a whole number of lines (else 0)."""
    channel_bytes = inner * np.dtype(dtype).itemsize
    return 0 if channels * channel_bytes % 64 else 64 // math.gcd(channel_bytes, 64)


def _row_blocks(channels, inner, dtype):
    """(planned blocks, channels per block) of the row layout (RowLayout in kernels.inc), forward
    and backward alike: blocks of at most _block_positions(dtype) positions, their count rounded
    up to a multiple of 4, the channels spread evenly over them; then, where rows are a whole
    number of lines, the block width fitted to whole periods of the line grid (rounded up while
    no wider than the widest block, else down). Where the output lies can add one block (a short
    first one), not counted here."""
    positions = _block_positions(dtype)
    widest = max(1, min(channels, positions // inner))
    blocks = -(-channels // widest)
    if blocks > 1:
        blocks = -(-blocks // 4) * 4
    per_block = -(-channels // blocks)
    period = _line_period(channels, inner, dtype)
    if blocks > 1 and period > 1:
        up = -(-per_block // period) * period
        fitted = up if up <= widest else per_block // period * period
        per_block = fitted or per_block
    return -(-channels // per_block), per_block


# Row layout with enough channel blocks for a thread to own a block: statistics, then
# normalization from cache. For 16-bit types (64, 20000): 12 blocks of 1667 2-D channels, the
# last shorter; (40, 6000, 3): 12 blocks of 500 channels of 3; (16, 400, 7, 7): 12 blocks of 34
# 7x7 maps (inner >= the vector width: fused while a block's rows fit in half the L2, here at
# most 213 KB). float32's blocks are about half as wide, float64's a quarter, fitted to whole
# lines where rows are (float32: 20 blocks of 1008 and of 304 channels, 25 of 16 maps;
# float64: 40, 36 and 50 blocks).
@pytest.mark.parametrize("shape", [(64, 20000), (40, 6000, 3), (16, 400, 7, 7)])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_row_layout_fused_blocks(make_inputs, rng, dtype_name, shape):
    dtype = resolve_dtype(dtype_name)
    assert _row_blocks(shape[1], int(np.prod(shape[2:])), dtype)[0] >= 12
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    _check_training_and_backward(inputs, rng)


# Streamed row-layout tensors in blocks a thread owns, whose rows are a whole number of 64-byte
# lines: a thread normalizes each block (or writes its dx) while it sums the next
# (Forward::normalizes_alongside, Backward::writes_alongside; maps always, 2-D rows with
# PYBN_CPU_LLC_MB=1, every tensor then larger than the last-level cache), which it never does
# with PYBN_CPU_STREAM_STORES=0 (nothing streamed): the same bits. (dtype, shape, offset in elements of x and the output): 7x7
# maps in 32-33 blocks of 16 channels (whole lines); 8 float64 7x7 maps a block; 14x14 maps in
# 256 blocks of 4; 256 rows of 4 channels of 14x14 a block, two chunks of rows each
# (RowLayout::rows_per_chunk 167); x and the output starting at other places in a line, where
# the first block is shorter (RowLayout::shift) so that the others start on lines.
ROW_BLOCKS_ALONGSIDE = [("float32", (64, 512, 7, 7), 0), ("float32", (64, 528, 7, 7), 5),
                        ("float64", (32, 1024, 7, 7), 3), ("float32", (24, 1024, 14, 14), 13),
                        ("float32", (256, 64, 14, 14), 2)]

def row_blocks_dy(seed, index):
    """dy for the backward of case `index` of ROW_BLOCKS_ALONGSIDE, from `seed`."""
    dtype_name, shape, _ = ROW_BLOCKS_ALONGSIDE[index]
    return np.random.default_rng([seed, index, 2]).standard_normal(shape).astype(resolve_dtype(dtype_name))


ALONGSIDE_WORKER = r"""
import sys, numpy as np, pybn
sys.path.insert(0, sys.argv[2])
from conftest import poisoned
from test_kernel_paths import ROW_BLOCKS_ALONGSIDE, _past_line, row_blocks_dy, summed_alongside_inputs
seed, results = int(sys.argv[3]), {}
for index, (dtype, shape, offset) in enumerate(ROW_BLOCKS_ALONGSIDE):
    inputs = summed_alongside_inputs(seed, index, ROW_BLOCKS_ALONGSIDE)
    stats = [inputs[k].copy() for k in ("moving_mean", "moving_var")]
    data, out = _past_line(inputs["data"], offset), _past_line(poisoned(shape, inputs["data"].dtype), offset)
    y, mean, invstd = pybn.batch_norm(data, inputs["gamma"], inputs["beta"], *stats, out=out,
                                      output_mean_var=True, fix_gamma=False)
    dy, dx = _past_line(row_blocks_dy(seed, index), offset), _past_line(poisoned(shape, data.dtype), offset)
    _, dgamma, dbeta = pybn.batch_norm_backward(dy, data, inputs["gamma"], mean, invstd, fix_gamma=False, dx=dx)
    for name, value in dict(y=y, mean=mean, invstd=invstd, moving_mean=stats[0], moving_var=stats[1], dx=dx,
                            dgamma=dgamma, dbeta=dbeta).items():
        results[f"{index}_{name}"] = value
np.savez(sys.argv[1], **results)
"""


@pytest.fixture(scope="module")
def row_blocks_alongside(tmp_path_factory):
    """(seed, {"alongside" and "apart": ALONGSIDE_WORKER's results}), apart: nothing streamed."""
    seed = int(np.random.SeedSequence().entropy % (1 << 63))
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    for name, setting in (("alongside", dict(PYBN_CPU_LLC_MB="1")), ("apart", dict(PYBN_CPU_STREAM_STORES="0"))):
        path = tmp_path_factory.mktemp(name) / "results.npz"
        subprocess.run([sys.executable, "-c", ALONGSIDE_WORKER, str(path), here, str(seed)],
                       env=dict(os.environ, **setting), check=True, cwd=str(path.parent))
        results[name] = load_and_unlink(path)
    return seed, results


@pytest.mark.parametrize("case", range(len(ROW_BLOCKS_ALONGSIDE)))
def test_row_blocks_normalized_alongside(row_blocks_alongside, case):
    dtype_name, shape, _ = ROW_BLOCKS_ALONGSIDE[case]
    dtype = resolve_dtype(dtype_name)
    assert np.prod(shape) * dtype.itemsize >= 4 << 20  # streamed
    assert shape[1] * int(np.prod(shape[2:])) * dtype.itemsize % 64 == 0  # rows of whole lines
    blocks, per_block = _row_blocks(shape[1], int(np.prod(shape[2:])), dtype)
    assert blocks >= 8 and shape[0] * per_block * int(np.prod(shape[2:])) * dtype.itemsize <= 1 << 20  # fused
    seed, results = row_blocks_alongside
    inputs = summed_alongside_inputs(seed, case, ROW_BLOCKS_ALONGSIDE)
    alongside, apart = results["alongside"], results["apart"]
    expected = forward_reference(**inputs, fix_gamma=False, training=True)
    assert_close(alongside[f"{case}_y"], expected["y"], what="y")
    assert_close(alongside[f"{case}_mean"], expected["mean"], what="mean")
    assert_close(alongside[f"{case}_invstd"], expected["invstd"], what="invstd")
    grads = tuple(alongside[f"{case}_{name}"] for name in ("dx", "dgamma", "dbeta"))
    assert_gradients_close(grads, row_blocks_dy(seed, case), inputs["data"], inputs["gamma"],
                           alongside[f"{case}_mean"], alongside[f"{case}_invstd"], fix_gamma=False)
    for name in ("y", "mean", "invstd", "moving_mean", "moving_var", "dx", "dgamma", "dbeta"):
        assert_bitwise_equal(alongside[f"{case}_{name}"], apart[f"{case}_{name}"],
                             what=f"{name}, block by block against alongside")


# 7x7 maps in 12 or more blocks whose rows exceed half the L2 (kFusedBlockBytes, 1 MiB, in the
# forward; x and dy together in the backward): statistics over row groups, then one
# elementwise pass in memory order, although there are blocks enough for a thread to own one.
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_row_layout_blocks_too_large_to_fuse(make_inputs, rng, dtype_name):
    dtype = resolve_dtype(dtype_name)
    blocks, per_block = _row_blocks(400, 49, dtype)
    assert blocks >= 12
    rows = (1 << 20) // (per_block * 49 * np.dtype(dtype).itemsize) + 2
    inputs = make_inputs((rows, 400, 7, 7), axis=1, dtype=dtype)
    _check_training_and_backward(inputs, rng)


# Row layout with 4 channel blocks (2 * widest + 1 channels: 3 blocks, rounded up to 4), the
# last shorter: 2-D, and channels of 3 (for 16-bit types (64, 4097) and (65, 1365, 3); for
# float32 (128, 2049) and (128, 683, 3); for float64 (256, 1025) and (257, 341, 3): at least
# 2^18 elements, enough for 2 threads). On 1 or 2 threads a thread owns blocks (two per
# thread on 2); with fewer than two per thread (3 threads or more) the statistics go over row
# groups and all threads finalize coefficients batch by batch into each block's arrays:
# test_isa runs such shapes on 3 threads too.
@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_row_layout_four_blocks(make_inputs, rng, dtype_name, inner):
    dtype = resolve_dtype(dtype_name)
    channels = 2 * (_block_positions(dtype) // inner) + 1
    shape = (-(-(1 << 18) // (channels * inner)), channels) + ((inner,) if inner > 1 else ())
    assert _row_blocks(channels, inner, dtype)[0] == 4
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    _check_training_and_backward(inputs, rng)


# Row-layout blocks fitted to the output's lines (LineGrid, RowLayout::shift in kernels.inc):
# rows of whole lines, blocks of whole line periods, and where x (and dy) start at the same
# place in a line as the output (16-bit forwards: wherever x lies), the first block shorter so
# that every other block's row pieces start on a line. Where the buffers start moves the blocks'
# boundaries, never a bit: x, dy, y and dx at each offset together (the shift differs), and x
# elsewhere than y (16-bit forwards: shifted to y's lines; otherwise no shift), against offset 0
# (on a line), which is checked against the float64 reference. (16, 96, 7, 7): 6
# blocks of 16 float32 maps, 3 of 32 float16, 12 of 8 float64; 14x14 maps 4 to a block (float32,
# whose channel boundaries fall on lines where the buffers start a multiple of 16 bytes past
# one), in 40 rows (fewer go by long runs); 2-D rows of 300 (the column strips take fewer): 4
# blocks of 528 channels (16-bit types: 544), float64 of 264.
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(16, 96, 7, 7), (40, 64, 14, 14), (300, 0)])
def test_row_blocks_on_output_lines(make_inputs, rng, dtype_name, shape):
    dtype = resolve_dtype(dtype_name)
    if shape[1] == 0:
        shape = (300, 1056 if dtype.itemsize == 8 else 2112)
    inner = int(np.prod(shape[2:]))
    blocks, per_block = _row_blocks(shape[1], inner, dtype)
    period = _line_period(shape[1], inner, dtype)
    assert blocks > 1 and period > 1 and per_block % period == 0
    assert np.prod(shape) * dtype.itemsize < 4 << 20  # in cache: the fused path, blocks a thread owns
    _check_placements(make_inputs(shape, axis=1, dtype=dtype), rng.standard_normal(shape).astype(dtype),
                      ((0, 0), (1, 1), (4, 4), (8, 8), (13, 13), (5, 0), (0, 5), (5, 11)))


# Per-channel work (statistics to coefficients, the (C,) outputs, moving statistics, dgamma and
# dbeta) goes in batches of 256 channels (kChannelBatch): counts around and across batch
# boundaries, in every path that finalizes channels. (3, 700): 2-D, one block, three batches,
# the last short; (5, 600, 20): channel runs; 2-D blocks (of 16-bit types; float32's are half
# as wide, float64's a quarter) of 1176, 1251 and 1667 channels, the last one shorter:
# (16, 4701) on one thread, (40, 5001) 4 blocks (two per thread on 2 threads, finalized by
# all threads on 3 or more), (8, 20000) 12 blocks, owned by threads (inference of 2-D inputs
# wider than a block goes the same ways);
# (3, 300, 2000): long runs.
@pytest.mark.parametrize("shape", [(3, 700), (5, 600, 20), (16, 4701), (40, 5001), (8, 20000),
                                   (3, 300, 2000)])
@pytest.mark.parametrize("fix_gamma", [False, True])
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64"])
def test_channels_finalized_in_batches(make_inputs, rng, dtype_name, shape, fix_gamma):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    for flags in (dict(training=True), dict(training=True, use_global_stats=True),
                  dict(training=False)):
        y, mean, invstd, state = _forward(inputs, fix_gamma=fix_gamma, **flags)
        expected = forward_reference(**inputs, fix_gamma=fix_gamma, **flags)
        assert_close(y, expected["y"], what=f"y {flags}")
        assert_close(mean, expected["mean"], what=f"mean {flags}")
        assert_close(invstd, expected["invstd"], what=f"invstd {flags}")
        for name in ("moving_mean", "moving_var", "gamma"):
            assert_close(state[name], expected[name], what=f"{name} {flags}")
    _, mean, invstd, _ = _forward(inputs, training=True)
    dy = rng.standard_normal(shape).astype(dtype)
    dx = poisoned(shape, dtype)
    starts = (rng.standard_normal(shape[1]).astype(mean.dtype),
              rng.standard_normal(shape[1]).astype(mean.dtype))
    dgamma, dbeta = starts[0].copy(), starts[1].copy()
    for use_global_stats in (False, True):
        dgamma[:], dbeta[:] = starts
        pybn.batch_norm_backward(dy, inputs["data"], inputs["gamma"], mean, invstd,
                                 fix_gamma=fix_gamma, use_global_stats=use_global_stats,
                                 grad_req=("write", "add", "add"), dx=dx, dgamma=dgamma,
                                 dbeta=dbeta)
        assert_gradients_close((dx, dgamma, dbeta), dy, inputs["data"], inputs["gamma"], mean,
                               invstd, fix_gamma=fix_gamma, use_global_stats=use_global_stats,
                               initial=(None,) + starts)


# 2-D inputs in cache go strip by strip (column strips in kernels.inc): strips of 64 16-bit or
# float32 channels or 32 float64 ones, down all rows; where rows are whole 64-byte lines the
# first strip runs to the output's first line boundary, so it and the last one end in a part
# of a vector (masked where the ISA has masks); the row layout's reduction chunks (two in
# float16 256x1024 and float32 128x2048). Against the reference at offset 0, and bit for bit
# at every other offset of the outputs (forward, and dx written and added), which moves the
# strip boundaries; the same for the inputs moved along with them.
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("shape", [(256, 1024), (128, 2048), (64, 1000), (33, 777), (1, 4096), (16, 320)])
def test_column_strips(make_inputs, rng, dtype_name, shape):
    dtype = resolve_dtype(dtype_name)
    inputs = make_inputs(shape, axis=1, dtype=dtype)
    data, gamma = inputs["data"], inputs["gamma"]
    dy = rng.standard_normal(shape).astype(dtype)
    start = rng.standard_normal(shape).astype(dtype)
    itemsize = np.dtype(dtype).itemsize
    cases = [(flags, req) for flags in (dict(training=True), dict(training=False),
                                        dict(training=True, use_global_stats=True))
             for req in ("write", "add")]
    base = {}
    for offset, inputs_offset in ((0, 0), (16 // itemsize, 0), (32 // itemsize, 0), (48 // itemsize, 0),
                                  (3, 0), (16 // itemsize, 16 // itemsize)):
        x, g = _at_offset(data, inputs_offset), _at_offset(dy, inputs_offset)
        for flags, req in cases:
            moving = inputs["moving_mean"].copy(), inputs["moving_var"].copy()
            out = _at_offset(poisoned(shape, dtype), offset)
            y, mean, invstd = pybn.batch_norm(x, gamma, inputs["beta"], *moving, out=out,
                                              output_mean_var=True, fix_gamma=False, **flags)
            use_global = not flags["training"] or flags.get("use_global_stats", False)
            dx = _at_offset(start if req == "add" else poisoned(shape, dtype), offset)
            dgamma = np.full(shape[1], np.nan, mean.dtype)
            dbeta = np.full(shape[1], np.nan, mean.dtype)
            pybn.batch_norm_backward(g, x, gamma, mean, invstd, fix_gamma=False, use_global_stats=use_global,
                                     grad_req=(req, "write", "write"), dx=dx, dgamma=dgamma, dbeta=dbeta)
            results = dict(y=y, mean=mean, invstd=invstd, moving_mean=moving[0], moving_var=moving[1],
                           dx=dx, dgamma=dgamma, dbeta=dbeta)
            key = (tuple(sorted(flags.items())), req)
            what = f"{flags} dx {req}, outputs at {offset}, inputs at {inputs_offset}"
            if offset == 0:
                expected = forward_reference(**inputs, fix_gamma=False, **flags)
                for name in ("y", "moving_mean", "moving_var"):
                    assert_close(results[name], expected[name], what=f"{name}, {what}")
                if flags["training"] and not use_global:
                    assert_close(mean, expected["mean"], what=f"mean, {what}")
                    assert_close(invstd, expected["invstd"], what=f"invstd, {what}")
                assert_gradients_close((dx, dgamma, dbeta), dy, data, gamma, mean, invstd, fix_gamma=False,
                                       use_global_stats=use_global,
                                       initial=(start if req == "add" else None, None, None))
                base[key] = results
            else:
                for name, value in results.items():
                    assert_bitwise_equal(value, base[key][name], what=f"{name}, {what}")
