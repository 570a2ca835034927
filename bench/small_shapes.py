#!/usr/bin/env python3
"""pybn against PyTorch on small batches of convolution maps and narrow 2-D inputs.

bench/cpu.py times the large tensors of the performance issue; calls of a few hundred KB
(one to eight images of 7x7 to 56x56 maps, a BatchNorm1d over a few rows) are a different
regime: the data sits in cache and per-channel and per-run costs decide. This script times
pybn's training forward, inference and backward (outputs preallocated) against ATen's
native_batch_norm entry points on the same arrays, and against a copy floor (np.copyto of x
into a preallocated buffer, one thread), all in one process, round by round in a fresh
order. Medians over rounds; each sample is a loop of calls lasting at least --min-sample-ms.

    python bench/small_shapes.py                         # default shapes, float32 and float64
    python bench/small_shapes.py --shapes 1x1024x7x7,8x512x7x7 --dtypes float32 --json out.json

PyTorch is optional (its columns are left empty without it). pybn must be installed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

EPS = 1e-3
MOMENTUM = 0.9  # MXNet's convention (pybn); PyTorch's momentum is 1 - this
DEFAULT_SHAPES = ("1x1024x7x7,2x1024x7x7,4x512x7x7,8x512x7x7,1x2048x7x7,2x2048x7x7,"
                  "1x256x14x14,2x256x14x14,4x256x14x14,1x128x28x28,2x128x28x28,1x64x56x56,"
                  "16x64,64x256,128x512")
OPS = ("train", "infer", "bwd")
# Relative tolerance (max |a - b| / max |b|) of the cross-check of y and dx against PyTorch.
CHECK_TOL = {"float16": 2e-2, "float32": 1e-4, "float64": 1e-10}


def parse_shape(text):
    return tuple(int(part) for part in text.lower().split("x"))


def timed(fn, min_sample_s):
    """Seconds per call: calls in a loop until the loop lasts min_sample_s."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_sample_s:
            return elapsed / calls
        calls = max(calls * 2, int(calls * min_sample_s / max(elapsed, 1e-9)) + 1)


class Case:
    """One shape and dtype: the arrays and a callable per contestant."""

    def __init__(self, shape, dtype, rng, pybn, torch):
        pdt = np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)
        channels = shape[1]
        self.x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
        self.dy = rng.standard_normal(shape).astype(dtype)
        self.gamma = (rng.random(channels) + 0.5).astype(pdt)
        self.beta = rng.random(channels).astype(pdt)
        self.moving_mean = np.zeros(channels, pdt)
        self.moving_var = np.ones(channels, pdt)
        self.y = np.empty_like(self.x)
        self.dx = np.empty_like(self.x)
        self.dgamma = np.empty_like(self.gamma)
        self.dbeta = np.empty_like(self.gamma)
        self.copy_out = np.empty_like(self.x)
        _, self.mean, self.invstd = pybn.batch_norm(
            self.x, self.gamma, self.beta, self.moving_mean.copy(), self.moving_var.copy(),
            eps=EPS, momentum=MOMENTUM, fix_gamma=False, output_mean_var=True)
        self.contestants = {}
        self._torch_outputs = None  # what cross_check needs of PyTorch's calls
        self._pybn(pybn)
        if torch is not None:
            self._torch(torch)
        self.contestants["floor/copy"] = lambda: np.copyto(self.copy_out, self.x)

    def _pybn(self, bn):
        x, g, b, mm, mv = self.x, self.gamma, self.beta, self.moving_mean, self.moving_var
        kw = dict(eps=EPS, momentum=MOMENTUM, fix_gamma=False)
        self.contestants["pybn/train"] = lambda: bn.batch_norm(x, g, b, mm, mv, training=True, out=self.y, **kw)
        self.contestants["pybn/infer"] = lambda: bn.batch_norm(x, g, b, mm, mv, training=False, out=self.y, **kw)
        self.contestants["pybn/bwd"] = lambda: bn.batch_norm_backward(
            self.dy, x, g, self.mean, self.invstd, fix_gamma=False, training=True,
            dx=self.dx, dgamma=self.dgamma, dbeta=self.dbeta)

    def _torch(self, torch):
        tx, tdy = torch.from_numpy(self.x), torch.from_numpy(self.dy)
        tg, tb = torch.from_numpy(self.gamma.copy()), torch.from_numpy(self.beta.copy())
        tmm, tmv = torch.from_numpy(self.moving_mean.copy()), torch.from_numpy(self.moving_var.copy())
        ty = torch.empty_like(tx)
        save_mean, save_invstd = torch.empty_like(tg), torch.empty_like(tg)
        aten = torch.ops.aten
        momentum = 1.0 - MOMENTUM

        def train():
            aten.native_batch_norm.out(tx, tg, tb, tmm, tmv, True, momentum, EPS,
                                       out=ty, save_mean=save_mean, save_invstd=save_invstd)

        def infer():
            aten.native_batch_norm.out(tx, tg, tb, tmm, tmv, False, momentum, EPS,
                                       out=ty, save_mean=save_mean, save_invstd=save_invstd)

        train()  # save_mean / save_invstd for the backward
        self._torch_outputs = (ty, tdy, tx, tg, tmm, tmv, save_mean, save_invstd, aten)
        self.contestants["torch/train"] = train
        self.contestants["torch/infer"] = infer
        self.contestants["torch/bwd"] = lambda: aten.native_batch_norm_backward(
            tdy, tx, tg, tmm, tmv, save_mean, save_invstd, True, EPS, [True, True, True])

    def cross_check(self):
        """max |pybn - torch| / max |torch| of the training y and of dx (None without torch)."""
        if self._torch_outputs is None:
            return None
        ty, tdy, tx, tg, tmm, tmv, save_mean, save_invstd, aten = self._torch_outputs
        self.contestants["pybn/train"]()
        self.contestants["torch/train"]()
        self.contestants["pybn/bwd"]()
        tdx = aten.native_batch_norm_backward(tdy, tx, tg, tmm, tmv, save_mean, save_invstd,
                                              True, EPS, [True, True, True])[0]

        def rel(a, b):
            a, b = a.astype(np.float64), b.astype(np.float64)
            return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
        return {"y": rel(self.y, ty.numpy()), "dx": rel(self.dx, tdx.numpy())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma list of NxCxHxW or NxC")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--min-sample-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for pybn and PyTorch (default: pybn's own count)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)

    import pybn
    if args.threads:
        pybn.set_num_threads(args.threads)
    threads = pybn.get_num_threads()
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            print("PyTorch not installed: its columns stay empty", file=sys.stderr)

    shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    rng = np.random.default_rng(args.seed)
    order_rng = random.Random(args.seed)
    rows = []
    total = len(shapes) * len(dtypes)
    for index, (shape, dtype) in enumerate(((s, d) for s in shapes for d in dtypes), 1):
        name = "x".join(map(str, shape))
        print(f"[{index}/{total}] {name} {dtype}", file=sys.stderr, flush=True)
        case = Case(shape, dtype, rng, pybn, torch)
        check = case.cross_check()
        samples = {key: [] for key in case.contestants}
        for fn in case.contestants.values():  # warm-up
            timed(fn, args.min_sample_ms / 1e3)
        for _ in range(args.repeats):
            keys = list(case.contestants)
            order_rng.shuffle(keys)
            for key in keys:
                samples[key].append(timed(case.contestants[key], args.min_sample_ms / 1e3))
        med = {key: float(np.median(v)) * 1e6 for key, v in samples.items()}
        for op in OPS:
            p, t = med[f"pybn/{op}"], med.get(f"torch/{op}")
            rows.append({"shape": list(shape), "dtype": dtype, "op": op, "pybn_us": p, "torch_us": t,
                         "torch_over_pybn": t / p if t else None, "copy_us": med["floor/copy"],
                         "pybn_over_copy": p / med["floor/copy"], "cross_check": check,
                         "samples_us": {k: [s * 1e6 for s in samples[k]] for k in (f"pybn/{op}", f"torch/{op}")
                                        if k in samples}})
        if check is not None and max(check.values()) > CHECK_TOL[dtype]:
            print(f"  cross-check against PyTorch out of tolerance: {check}", file=sys.stderr)

    print(f"\npybn {pybn.__version__}, {threads} threads, cpu_isa {pybn.info().get('cpu_isa')}; "
          f"medians of {args.repeats} rounds, us per call (outputs preallocated)")
    header = f"{'shape':14s} {'dtype':8s} {'op':6s} {'pybn':>8s} {'torch':>8s} {'torch/pybn':>10s} {'copy':>7s} {'pybn/copy':>9s}"
    print(header)
    print("-" * len(header))
    behind = 0
    for r in rows:
        t = f"{r['torch_us']:8.1f}" if r["torch_us"] else f"{'-':>8s}"
        ratio = f"{r['torch_over_pybn']:10.2f}" if r["torch_over_pybn"] else f"{'-':>10s}"
        mark = " <" if r["torch_over_pybn"] and r["torch_over_pybn"] < 1.0 else ""
        behind += bool(mark)
        print(f"{'x'.join(map(str, r['shape'])):14s} {r['dtype']:8s} {r['op']:6s} {r['pybn_us']:8.1f} {t} "
              f"{ratio} {r['copy_us']:7.1f} {r['pybn_over_copy']:9.2f}{mark}")
    if torch is not None:
        print(f"\n{len(rows) - behind}/{len(rows)} no slower than PyTorch ('<' marks the others)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pybn": pybn.__version__, "threads": threads, "info": pybn.info(),
                       "torch": getattr(torch, "__version__", None), "repeats": args.repeats,
                       "argv": sys.argv[1:], "cpu_count": os.cpu_count(), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
