"""``python -m pybn``: what is built, then a realistic batch normalized forward and backward,
checked against a float64 NumPy computation and timed (median of --repeat runs)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import pybn


def _parse_shape(text):
    try:
        shape = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape must be comma-separated integers, got {text!r}") from None
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"--shape needs positive sizes, got {text!r}")
    return shape


def _dtype(name):
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise argparse.ArgumentTypeError("bfloat16 needs the ml_dtypes package") from None
        return np.dtype(ml_dtypes.bfloat16)
    if name not in ("float16", "float32", "float64"):
        raise argparse.ArgumentTypeError(f"--dtype must be float16, bfloat16, float32 or float64, got {name!r}")
    return np.dtype(name)


def _print_info():
    facts = pybn.info()
    print(f"pybn {facts['version']} (ABI {facts['abi_version']})")
    for name, state in facts["backends"].items():
        status = "available" if state["available"] else ("built, unavailable" if state["built"] else "not built")
        print(f"  backend {name:6s} {status}")
    print(f"  cpu: {facts['omp_threads']} thread(s) (OpenMP), SIMD path {facts['cpu_isa']}")
    print(f"  cuDNN minimum epsilon: {facts['cudnn_min_epsilon']}")
    print(f"  host cache for large outputs: {facts['host_cache_bytes'] / 2**20:.0f} MiB idle, "
          f"limit {facts['host_cache_limit'] / 2**20:.0f} MiB")
    print(f"  library: {facts['library']}")


def _median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _channel_view(a, axis):
    """(C, M) float64 copy of a with the channel axis first."""
    return np.ascontiguousarray(np.moveaxis(a.astype(np.float64), axis, 0)).reshape(a.shape[axis], -1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pybn", description=__doc__)
    parser.add_argument("--shape", type=_parse_shape, default=(32, 256, 56, 56),
                        help="data shape, comma-separated (default 32,256,56,56)")
    parser.add_argument("--dtype", type=_dtype, default=np.dtype(np.float32),
                        help="float16, bfloat16, float32 (default) or float64")
    parser.add_argument("--axis", type=int, default=1, help="channel axis (default 1)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per pass (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (pybn.set_num_threads; default 0: OpenMP's maximum)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    pybn.set_num_threads(args.threads)

    _print_info()
    shape, dtype, axis = args.shape, args.dtype, args.axis
    if not -len(shape) <= axis < len(shape):
        parser.error(f"--axis {axis} is out of range for a {len(shape)}-d shape")
    channels = shape[axis]
    param_dtype = np.float32 if dtype.itemsize == 2 else dtype
    nbytes = int(np.prod(shape)) * dtype.itemsize
    print(f"\nbatch: shape {shape}, {dtype.name}, axis {axis}, {nbytes / 1e6:.1f} MB", flush=True)

    rng = np.random.default_rng(args.seed)
    offsets = rng.uniform(-3, 3, channels).reshape([-1 if d == axis % len(shape) else 1 for d in range(len(shape))])
    x = (rng.standard_normal(shape, dtype=np.float32) + offsets).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, channels).astype(param_dtype)
    beta = rng.uniform(-1, 1, channels).astype(param_dtype)
    moving_mean = np.zeros(channels, param_dtype)
    moving_var = np.ones(channels, param_dtype)
    dy = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    y = np.empty_like(x)
    dx = np.empty_like(x)
    dgamma = np.empty(channels, param_dtype)
    dbeta = np.empty(channels, param_dtype)
    common = dict(fix_gamma=False, axis=axis)

    def forward():
        return pybn.batch_norm(x, gamma, beta, moving_mean, moving_var, output_mean_var=True,
                               out=y, **common)

    _, mean, invstd = forward()
    pybn.batch_norm_backward(dy, x, gamma, mean, invstd, dx=dx, dgamma=dgamma, dbeta=dbeta, **common)

    # float64 check of what was just computed (SPEC.md "Forward" and "Backward")
    xc = _channel_view(x, axis)
    mean64 = xc.mean(axis=1)
    invstd64 = 1.0 / np.sqrt(((xc - mean64[:, None]) ** 2).mean(axis=1) + 1e-3)
    xhat = (xc - mean64[:, None]) * invstd64[:, None]
    y64 = xhat * gamma.astype(np.float64)[:, None] + beta.astype(np.float64)[:, None]
    g = _channel_view(dy, axis)
    dbeta64 = g.sum(axis=1)
    dgamma64 = (g * xhat).sum(axis=1)
    dx64 = (gamma.astype(np.float64) * invstd64)[:, None] * (
        g - dbeta64[:, None] / xc.shape[1] - xhat * dgamma64[:, None] / xc.shape[1])
    ulp = float(np.finfo(np.float32 if dtype.itemsize == 2 else dtype).eps)
    tol = {2: 2e-2, 4: 1e-4, 8: 1e-10}[dtype.itemsize]
    errors = {
        "mean": np.max(np.abs(mean - mean64) / np.maximum(np.abs(mean64), 1)),
        "invstd": np.max(np.abs(invstd / invstd64 - 1)),
        "y": np.max(np.abs(_channel_view(y, axis) - y64)),
        "dx": np.max(np.abs(_channel_view(dx, axis) - dx64)) / max(np.max(np.abs(dx64)), 1e-30),
        "dgamma": np.max(np.abs(dgamma - dgamma64)) / max(np.max(np.abs(dgamma64)), 1e-30),
    }
    print("max error vs float64 (y absolute, others relative): " +
          ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    limits = {"mean": 100 * ulp, "invstd": 100 * ulp, "y": tol, "dx": 10 * tol, "dgamma": 10 * tol}
    failed = [k for k, v in errors.items() if not v <= limits[k]]

    forward_ms = _median_ms(forward, args.repeat)
    inference_ms = _median_ms(lambda: pybn.batch_norm(x, gamma, beta, moving_mean, moving_var,
                                                      training=False, out=y, **common), args.repeat)
    backward_ms = _median_ms(lambda: pybn.batch_norm_backward(
        dy, x, gamma, mean, invstd, dx=dx, dgamma=dgamma, dbeta=dbeta, **common), args.repeat)
    copy_ms = _median_ms(lambda: np.copyto(y, x), args.repeat)
    print(f"\n{'pass':22s} {'median ms':>10s} {'GB/s':>8s}   (bytes: each tensor read/written once)")
    for name, ms, tensors in (("forward (training)", forward_ms, 2), ("forward (inference)", inference_ms, 2),
                              ("backward (training)", backward_ms, 3), ("numpy copy (1 thread)", copy_ms, 2)):
        print(f"{name:22s} {ms:10.2f} {tensors * nbytes / ms / 1e6:8.1f}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)} off the float64 reference", file=sys.stderr)
        return 1
    print("\nresults match the float64 reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
