"""CuPy arrays through pybn (SPEC.md "Backends"): the cuda and cudnn backends give the numbers
of the CPU path and of the float64 model, results come back as CuPy arrays on the caller's
device and stream, and bad input is rejected with nothing written.

Until the CUDA backend is built (cuda/README.md), the backend's own checks skip with that reason
and the checks of what this build promises run instead: device arrays are refused with
RuntimeError and nothing written. Skipped, with the reason, where CuPy or a CUDA device is
missing."""

import numpy as np
import pytest

import pybn
from reference import (assert_close, assert_gradients_close, backward_magnitudes,
                       forward_reference, param_dtype)

cupy = pytest.importorskip("cupy", reason="the GPU tests need CuPy")


def _device_count():
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no driver, or no device
        return 0


if _device_count() == 0:
    pytest.skip("no CUDA device visible to CuPy", allow_module_level=True)

pytestmark = pytest.mark.gpu

CUDA_BUILT = pybn.info()["backends"]["cuda"]["built"]
needs_cuda_backend = pytest.mark.skipif(
    not CUDA_BUILT, reason="pybn is built without its CUDA backend (cuda/README.md); "
    "these are that backend's checks")

GPU_DTYPES = ("float16", "float32", "float64")  # CuPy has no bfloat16 arrays


def host_inputs(rng, shape, axis, dtype):
    dtype = np.dtype(dtype)
    pdtype = param_dtype(dtype)
    channels = shape[axis]
    broadcast = [1] * len(shape)
    broadcast[axis] = channels
    data = (rng.uniform(-3, 3, channels).reshape(broadcast)
            + rng.uniform(0.5, 2, channels).reshape(broadcast) * rng.standard_normal(shape))
    return {
        "data": data.astype(dtype),
        "gamma": rng.uniform(0.5, 1.5, channels).astype(pdtype),
        "beta": rng.uniform(-1, 1, channels).astype(pdtype),
        "moving_mean": rng.uniform(-1, 1, channels).astype(pdtype),
        "moving_var": rng.uniform(0.5, 2, channels).astype(pdtype),
    }


def to_device(inputs):
    return {name: cupy.asarray(array) for name, array in inputs.items()}


def run_step(arrays, dy, **flags):
    """Forward (output_mean_var) then backward on copies of `arrays` (NumPy or CuPy)."""
    state = {name: array.copy() for name, array in arrays.items()}
    y, mean, invstd = pybn.batch_norm(state["data"], state["gamma"], state["beta"],
                                      state["moving_mean"], state["moving_var"],
                                      output_mean_var=True, **flags)
    backward_flags = {key: value for key, value in flags.items()
                      if key in ("fix_gamma", "use_global_stats", "training", "axis",
                                 "cudnn_off")}
    dx, dgamma, dbeta = pybn.batch_norm_backward(dy, state["data"], state["gamma"], mean,
                                                 invstd, **backward_flags)
    return {"y": y, "mean": mean, "invstd": invstd, "moving_mean": state["moving_mean"],
            "moving_var": state["moving_var"], "gamma": state["gamma"], "dx": dx,
            "dgamma": dgamma, "dbeta": dbeta}


@needs_cuda_backend
@pytest.mark.parametrize("cudnn_off", [False, True])
@pytest.mark.parametrize("training,use_global_stats", [(True, False), (True, True),
                                                       (False, False)])
@pytest.mark.parametrize("fix_gamma", [True, False])
@pytest.mark.parametrize("axis", [1, -1, 2])
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
def test_gpu_matches_cpu_and_reference(rng, dtype_name, axis, fix_gamma, training,
                                       use_global_stats, cudnn_off):
    dtype = np.dtype(dtype_name)
    shape = (4, 6, 5, 7)
    inputs = host_inputs(rng, shape, axis, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    flags = dict(axis=axis, fix_gamma=fix_gamma, training=training,
                 use_global_stats=use_global_stats, cudnn_off=cudnn_off)
    device = run_step(to_device(inputs), cupy.asarray(dy), **flags)
    for name, value in device.items():
        assert isinstance(value, cupy.ndarray), f"{name} is not a CuPy array"
        assert value.device.id == cupy.cuda.Device().id
    host = run_step(inputs, dy, **flags)

    expected = forward_reference(**inputs, fix_gamma=fix_gamma, training=training,
                                 use_global_stats=use_global_stats, axis=axis)
    for name in ("y", "mean", "invstd", "moving_mean", "moving_var", "gamma"):
        value = cupy.asnumpy(device[name])
        assert_close(value, expected[name], what=name)
        assert_close(value, host[name].astype(np.float64), dtype=value.dtype,
                     what=f"{name} vs CPU")
    gradients = tuple(cupy.asnumpy(device[name]) for name in ("dx", "dgamma", "dbeta"))
    backward_inputs = (dy, inputs["data"], inputs["gamma"], cupy.asnumpy(device["mean"]),
                       cupy.asnumpy(device["invstd"]))
    backward_flags = dict(fix_gamma=fix_gamma, training=training,
                          use_global_stats=use_global_stats, axis=axis)
    assert_gradients_close(gradients, *backward_inputs, **backward_flags)
    scales = backward_magnitudes(*backward_inputs, **backward_flags)
    for name, value, scale in zip(("dx", "dgamma", "dbeta"), gradients, scales):
        assert_close(value, host[name].astype(np.float64), dtype=value.dtype,
                     scale=max(scale, 1e-300), what=f"{name} vs CPU")


@needs_cuda_backend
@pytest.mark.parametrize("axis", [1, -1])
def test_select_backend_for_device_arrays(axis):
    data = cupy.zeros((2, 3, 4, 5), dtype=cupy.float32)
    assert pybn.select_backend(data, axis=axis) in ("cuda", "cudnn")
    assert pybn.select_backend(data, axis=axis, cudnn_off=True) == "cuda"
    # A channel axis in the middle of the spatial ones is not a cuDNN layout.
    assert pybn.select_backend(data, axis=2) == "cuda"


@needs_cuda_backend
def test_cudnn_epsilon_floor():
    floor = pybn.CUDNN_BN_MIN_EPSILON
    data = cupy.ones((2, 3, 4), dtype=cupy.float32)
    if floor is None or floor == 0.0 or pybn.select_backend(data) != "cudnn":
        pytest.skip("cuDNN is not selected here or its epsilon floor is 0")
    params = [cupy.ones(3, cupy.float32) for _ in range(4)]
    moving_before = [p.get() for p in params]
    with pytest.raises(ValueError, match="cudnn_off"):
        pybn.batch_norm(data, *params, eps=floor / 2)
    for param, before in zip(params, moving_before):
        np.testing.assert_array_equal(param.get(), before)
    y = pybn.batch_norm(data, *params, eps=floor / 2, cudnn_off=True)
    assert isinstance(y, cupy.ndarray)


@needs_cuda_backend
def test_in_place_and_out_on_device(rng):
    inputs = host_inputs(rng, (3, 4, 8), 1, np.float32)
    arrays = to_device(inputs)
    out = cupy.full((3, 4, 8), cupy.nan, dtype=cupy.float32)
    y = pybn.batch_norm(arrays["data"], arrays["gamma"].copy(), arrays["beta"],
                        arrays["moving_mean"].copy(), arrays["moving_var"].copy(),
                        fix_gamma=False, out=out)
    expected = forward_reference(**inputs, fix_gamma=False)
    assert_close(out.get(), expected["y"])
    assert y.data.ptr == out.data.ptr
    data = arrays["data"].copy()
    pybn.batch_norm(data, arrays["gamma"].copy(), arrays["beta"], arrays["moving_mean"].copy(),
                    arrays["moving_var"].copy(), fix_gamma=False, out=data)
    assert_close(data.get(), expected["y"])


@needs_cuda_backend
@pytest.mark.parametrize("cudnn_off", [False, True])
def test_large_mean_accuracy_on_device(cudnn_off):
    rng = np.random.default_rng(99)
    std = np.array([1.0, 0.7, 1.3])
    mean = np.array([1e4, -1e4, 1e4]) * std
    shape = (8, 3, 512, 512)
    data = (mean.reshape(1, 3, 1, 1) + std.reshape(1, 3, 1, 1)
            * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    params = [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32),
              np.ones(3, np.float32)]
    y, batch_mean, invstd = pybn.batch_norm(cupy.asarray(data),
                                            *[cupy.asarray(p) for p in params],
                                            output_mean_var=True, cudnn_off=cudnn_off)
    expected = forward_reference(data, *params)
    np.testing.assert_allclose(batch_mean.get(), expected["mean"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(invstd.get(), expected["invstd"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(y.get(), expected["y"], rtol=0, atol=1e-4)


@needs_cuda_backend
def test_non_dense_device_input(rng):
    big = rng.normal(1, 2, (5, 8, 9)).astype(np.float32)
    data_host = big[::-1, ::2, 1::2]
    inputs = {"data": data_host, **{k: v for k, v in host_inputs(rng, data_host.shape, 1,
                                                                 np.float32).items()
                                    if k != "data"}}
    y = pybn.batch_norm(cupy.asarray(big)[::-1, ::2, 1::2], cupy.asarray(inputs["gamma"]),
                        cupy.asarray(inputs["beta"]), cupy.asarray(inputs["moving_mean"]),
                        cupy.asarray(inputs["moving_var"]), fix_gamma=False)
    assert_close(y.get(), forward_reference(**inputs, fix_gamma=False)["y"])


@needs_cuda_backend
def test_nan_stays_in_its_channel_on_device(rng):
    inputs = host_inputs(rng, (4, 5, 6), 1, np.float32)
    bad = dict(inputs, data=inputs["data"].copy())
    bad["data"][1, 2, 3] = np.nan
    good_y = pybn.batch_norm(*[cupy.asarray(inputs[k]).copy() for k in
                               ("data", "gamma", "beta", "moving_mean", "moving_var")])
    bad_y = pybn.batch_norm(*[cupy.asarray(bad[k]).copy() for k in
                              ("data", "gamma", "beta", "moving_mean", "moving_var")])
    others = [0, 1, 3, 4]
    np.testing.assert_array_equal(bad_y.get()[:, others], good_y.get()[:, others])
    assert np.all(np.isnan(bad_y.get()[:, 2]))


def test_device_mismatch_is_rejected(rng):
    inputs = host_inputs(rng, (2, 3, 4), 1, np.float32)
    data = cupy.asarray(inputs["data"])
    moving_mean = cupy.asarray(inputs["moving_mean"])
    moving_var = cupy.asarray(inputs["moving_var"])
    gamma_host = inputs["gamma"].copy()
    with pytest.raises(ValueError, match="gamma"):
        pybn.batch_norm(data, gamma_host, cupy.asarray(inputs["beta"]), moving_mean,
                        moving_var)
    np.testing.assert_array_equal(gamma_host, inputs["gamma"])
    np.testing.assert_array_equal(moving_mean.get(), inputs["moving_mean"])
    np.testing.assert_array_equal(moving_var.get(), inputs["moving_var"])


@needs_cuda_backend
def test_bit_identical_between_runs_on_cuda_backend(rng):
    inputs = to_device(host_inputs(rng, (16, 8, 33, 17), 1, np.float32))
    dy = cupy.asarray(rng.standard_normal((16, 8, 33, 17)).astype(np.float32))
    first = run_step(inputs, dy, fix_gamma=False, cudnn_off=True)
    second = run_step(inputs, dy, fix_gamma=False, cudnn_off=True)
    for name in first:
        assert first[name].get().tobytes() == second[name].get().tobytes(), name


@needs_cuda_backend
def test_runs_on_the_callers_stream(rng):
    inputs = host_inputs(rng, (8, 4, 64, 64), 1, np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        arrays = to_device(inputs)
        y = pybn.batch_norm(arrays["data"], arrays["gamma"], arrays["beta"],
                            arrays["moving_mean"], arrays["moving_var"], fix_gamma=False)
        result = cupy.asnumpy(y, stream=stream)
        stream.synchronize()
    assert_close(result, forward_reference(**inputs, fix_gamma=False)["y"])


# ---- this build, without the CUDA backend ----------------------------------------------------

without_cuda_backend = pytest.mark.skipif(
    CUDA_BUILT, reason="the CUDA backend is built: its own checks above apply")


def device_bytes(arrays):
    """Each device array's bytes, copied to the host (NaN-safe to compare)."""
    return {name: cupy.asnumpy(array).tobytes() for name, array in arrays.items()}


@without_cuda_backend
@pytest.mark.parametrize("training,use_global_stats", [(True, False), (True, True),
                                                       (False, False)])
@pytest.mark.parametrize("with_outputs", [False, True])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype_name", GPU_DTYPES)
def test_device_arrays_refused_without_cuda_backend(rng, dtype_name, axis, with_outputs,
                                                    training, use_global_stats):
    dtype = np.dtype(dtype_name)
    shape = (4, 6, 5, 7)
    inputs = host_inputs(rng, shape, axis, dtype)
    arrays = to_device(inputs)
    channels = shape[axis]
    stat = param_dtype(dtype)
    arrays["dy"] = cupy.asarray(rng.standard_normal(shape).astype(dtype))
    arrays["mean"] = cupy.asarray(rng.uniform(-1, 1, channels).astype(stat))
    arrays["invstd"] = cupy.asarray(rng.uniform(0.5, 2, channels).astype(stat))
    outputs = {}
    if with_outputs:  # poisoned, as the caller's preallocated buffers
        outputs = {"out": cupy.full(shape, cupy.nan, dtype=dtype),
                   "dx": cupy.full(shape, cupy.nan, dtype=dtype),
                   "dgamma": cupy.full(channels, cupy.nan, dtype=stat),
                   "dbeta": cupy.full(channels, cupy.nan, dtype=stat)}
    before = device_bytes({**arrays, **outputs})
    flags = dict(axis=axis, fix_gamma=True, training=training,
                 use_global_stats=use_global_stats)

    with pytest.raises(RuntimeError, match="without a CUDA backend"):
        pybn.batch_norm(arrays["data"], arrays["gamma"], arrays["beta"], arrays["moving_mean"],
                        arrays["moving_var"], output_mean_var=True, out=outputs.get("out"),
                        **flags)
    with pytest.raises(RuntimeError, match="without a CUDA backend"):
        pybn.batch_norm_backward(arrays["dy"], arrays["data"], arrays["gamma"], arrays["mean"],
                                 arrays["invstd"], dx=outputs.get("dx"),
                                 dgamma=outputs.get("dgamma"), dbeta=outputs.get("dbeta"),
                                 **flags)
    with pytest.raises(RuntimeError, match="without a CUDA backend"):
        pybn.select_backend(arrays["data"], axis=axis)
    # fix_gamma would write 1 into gamma and training the moving statistics: neither happened.
    assert device_bytes({**arrays, **outputs}) == before


@without_cuda_backend
def test_non_dense_device_input_refused_without_cuda_backend(rng):
    big = cupy.asarray(rng.normal(1, 2, (5, 8, 9)).astype(np.float32))
    data = big[::-1, ::2, 1::2]
    params = {name: cupy.asarray(rng.uniform(0.5, 1.5, 4).astype(np.float32))
              for name in ("gamma", "beta", "moving_mean", "moving_var")}
    before = device_bytes({"big": big, **params})
    with pytest.raises(RuntimeError, match="without a CUDA backend"):
        pybn.batch_norm(data, *params.values(), fix_gamma=True)
    assert device_bytes({"big": big, **params}) == before
