// Validation: the only place that checks arguments. It turns raw C descriptors into a Plan
// or throws pybn::Error with a message naming the argument (SPEC.md "Errors"). Nothing here
// writes to any buffer, so an error always leaves the caller's memory as it was.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "error.hpp"
#include "plan.hpp"

namespace pybn {
namespace {

constexpr int kMaxDims = 64;

std::string shape_string(const int64_t *shape, int ndim) {
  std::ostringstream s;
  s << '(';
  for (int d = 0; d < ndim; ++d) s << (d ? ", " : "") << shape[d];
  s << (ndim == 1 ? ",)" : ")");
  return s.str();
}

std::string dtype_string(const pybn_dtype &t) {
  std::ostringstream s;
  switch (t.code) {
    case 0: s << "int" << int(t.bits); break;
    case 1: s << "uint" << int(t.bits); break;
    case PYBN_DTYPE_FLOAT: s << "float" << int(t.bits); break;
    case PYBN_DTYPE_BFLOAT: s << "bfloat" << int(t.bits); break;
    case 5: s << "complex" << int(t.bits); break;
    case 6: s << "bool"; break;
    default: s << "dtype(code=" << int(t.code) << ", bits=" << int(t.bits) << ")";
  }
  if (t.lanes != 1) s << "x" << t.lanes;
  return s.str();
}

std::string device_string(const pybn_device &d) {
  switch (d.device_type) {
    case PYBN_DEVICE_CPU: return "cpu";
    case PYBN_DEVICE_CUDA_HOST: return "cuda_host";
    case PYBN_DEVICE_CUDA: return "cuda:" + std::to_string(d.device_id);
    case PYBN_DEVICE_CUDA_MANAGED: return "cuda_managed:" + std::to_string(d.device_id);
    default: return "device type " + std::to_string(d.device_type);
  }
}

bool is_host(const pybn_device &d) {
  return d.device_type == PYBN_DEVICE_CPU || d.device_type == PYBN_DEVICE_CUDA_HOST;
}
bool is_cuda(const pybn_device &d) {
  return d.device_type == PYBN_DEVICE_CUDA || d.device_type == PYBN_DEVICE_CUDA_MANAGED;
}
bool same_memory_space(const pybn_device &a, const pybn_device &b) {
  if (is_host(a) && is_host(b)) return true;
  return a.device_type == b.device_type && a.device_id == b.device_id;
}

// A descriptor with its strides made explicit (C order where strides == NULL).
struct Tensor {
  const char *name = "";
  const pybn_tensor *raw = nullptr;
  char *base = nullptr;  // data + byte_offset
  int ndim = 0;
  std::vector<int64_t> shape, strides;
  int64_t size = 0;
  int itemsize = 0;

  explicit operator bool() const { return raw != nullptr; }
};

Tensor describe(const pybn_tensor *t, const char *name) {
  Tensor out;
  out.name = name;
  if (!t) return out;
  if (t->ndim < 0 || t->ndim > kMaxDims)
    fail_value(std::string(name) + " has ndim " + std::to_string(t->ndim) + "; pybn supports 0 to " +
               std::to_string(kMaxDims));
  if (t->ndim > 0 && !t->shape) fail_value(std::string(name) + ".shape is NULL");
  out.raw = t;
  out.ndim = t->ndim;
  out.shape.assign(t->shape, t->shape + t->ndim);
  out.size = 1;
  for (int d = 0; d < out.ndim; ++d) {
    if (out.shape[d] < 0) fail_value(std::string(name) + " has a negative dimension: " + shape_string(t->shape, t->ndim));
    out.size *= out.shape[d];
  }
  out.strides.resize(size_t(out.ndim));
  if (t->strides) {
    out.strides.assign(t->strides, t->strides + t->ndim);
  } else {
    int64_t step = 1;
    for (int d = out.ndim - 1; d >= 0; --d) {
      out.strides[d] = step;
      step *= std::max<int64_t>(out.shape[d], 1);
    }
  }
  out.itemsize = std::max(1, t->dtype.bits / 8);
  out.base = static_cast<char *>(t->data) + t->byte_offset;
  if (out.size > 0 && !t->data) fail_value(std::string(name) + ".data is NULL");
  return out;
}

DType data_dtype(const Tensor &t) {
  const pybn_dtype &d = t.raw->dtype;
  if (d.lanes == 1) {
    if (d.code == PYBN_DTYPE_FLOAT && d.bits == 16) return DType::f16;
    if (d.code == PYBN_DTYPE_BFLOAT && d.bits == 16) return DType::bf16;
    if (d.code == PYBN_DTYPE_FLOAT && d.bits == 32) return DType::f32;
    if (d.code == PYBN_DTYPE_FLOAT && d.bits == 64) return DType::f64;
  }
  fail_type(std::string(t.name) + " has dtype " + dtype_string(d) +
            "; pybn supports float16, bfloat16, float32 and float64");
}

void require_dtype(const Tensor &t, DType expected, DType data, const char *why) {
  const pybn_dtype &d = t.raw->dtype;
  bool ok = false;
  switch (expected) {
    case DType::f16: ok = d.code == PYBN_DTYPE_FLOAT && d.bits == 16; break;
    case DType::bf16: ok = d.code == PYBN_DTYPE_BFLOAT && d.bits == 16; break;
    case DType::f32: ok = d.code == PYBN_DTYPE_FLOAT && d.bits == 32; break;
    case DType::f64: ok = d.code == PYBN_DTYPE_FLOAT && d.bits == 64; break;
  }
  if (!ok || d.lanes != 1)
    fail_type(std::string(t.name) + " must be " + dtype_name(expected) + " " + why + " " + dtype_name(data) +
              " data, got " + dtype_string(d));
}

void require_same_device(const Tensor &t, const Tensor &data) {
  if (!same_memory_space(t.raw->device, data.raw->device))
    fail_value(std::string(t.name) + " is on " + device_string(t.raw->device) + " but data is on " +
               device_string(data.raw->device));
}

// The (outer, C, inner) view of a dense tensor, or nothing if it is not dense (some
// permutation of C order, size-1 dimensions ignored, all strides positive).
bool dense_view(const Tensor &t, int axis, View &view) {
  const int64_t C = t.shape[axis];
  view.channels = C;
  if (t.size == 0) {  // M == 0 (or C == 0): nothing to read, any layout will do
    view.outer = 0;
    view.inner = 1;
    return true;
  }
  struct Dim { int64_t size, stride; bool channel; };
  std::vector<Dim> dims;
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] > 1) dims.push_back({t.shape[d], t.strides[d], d == axis});
  std::sort(dims.begin(), dims.end(), [](const Dim &a, const Dim &b) { return a.stride < b.stride; });
  int64_t expected = 1, inner = 1, outer = 1;
  bool past_channel = false;
  for (const Dim &d : dims) {
    if (d.stride != expected) return false;
    expected *= d.size;
    if (d.channel)
      past_channel = true;
    else if (past_channel)
      outer *= d.size;
    else
      inner *= d.size;
  }
  if (C == 1) {  // the channel axis has no stride to speak of: one channel, all inner
    inner *= outer;
    outer = 1;
  }
  view.outer = outer;
  view.inner = inner;
  return true;
}

// Same shape, and the same stride on every dimension longer than 1.
bool same_layout(const Tensor &a, const Tensor &b) {
  if (a.ndim != b.ndim || a.shape != b.shape) return false;
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] > 1 && a.strides[d] != b.strides[d]) return false;
  return true;
}

void require_like_data(const Tensor &t, const Tensor &data, DType dtype, const char *role) {
  if (t.ndim != data.ndim || t.shape != data.shape)
    fail_value(std::string(t.name) + " must have data's shape " + shape_string(data.shape.data(), data.ndim) +
               ", got " + shape_string(t.shape.data(), t.ndim));
  require_dtype(t, dtype, dtype, "(data's dtype) for");
  require_same_device(t, data);
  if (!same_layout(t, data))
    fail_value(std::string(t.name) + " must be dense with data's memory layout (same strides) to be " + role +
               " without a copy");
}

StatVector stat_vector(const Tensor &t, int64_t C, DType dtype, const Tensor &data) {
  if (t.ndim != 1 || t.shape[0] != C)
    fail_value(std::string(t.name) + " must have shape (C,) = (" + std::to_string(C) + ",), got " +
               shape_string(t.shape.data(), t.ndim));
  require_dtype(t, stat_dtype(dtype), dtype, "for");
  require_same_device(t, data);
  return {t.base, t.strides[0]};
}

struct Extent {
  uintptr_t lo = 0, hi = 0;  // bytes [lo, hi); empty when lo == hi
};

Extent extent_of(const Tensor &t) {
  if (!t || t.size == 0) return {};
  int64_t lo = 0, hi = 0;
  for (int d = 0; d < t.ndim; ++d) {
    const int64_t span = (t.shape[d] - 1) * t.strides[d];
    (span < 0 ? lo : hi) += span;
  }
  const uintptr_t base = reinterpret_cast<uintptr_t>(t.base);
  return {base + uintptr_t(lo * t.itemsize), base + uintptr_t((hi + 1) * t.itemsize)};
}

struct Operand {
  const Tensor *tensor;
  bool written;
};

// Any overlap between a written buffer and another buffer is an error, except that the
// output may be the data itself (same memory, same layout): SPEC "Edge cases".
void check_overlaps(const std::vector<Operand> &ops, const Tensor *in_place_out, const Tensor *in_place_in) {
  for (size_t i = 0; i < ops.size(); ++i) {
    for (size_t j = i + 1; j < ops.size(); ++j) {
      const Tensor &a = *ops[i].tensor, &b = *ops[j].tensor;
      if (!(ops[i].written || ops[j].written) || !a || !b) continue;
      if (!same_memory_space(a.raw->device, b.raw->device)) continue;
      const Extent ea = extent_of(a), eb = extent_of(b);
      if (ea.lo == ea.hi || eb.lo == eb.hi || ea.hi <= eb.lo || eb.hi <= ea.lo) continue;
      const bool exact_alias_allowed =
          ((&a == in_place_out && &b == in_place_in) || (&a == in_place_in && &b == in_place_out)) &&
          a.base == b.base && same_layout(a, b);
      if (exact_alias_allowed) continue;
      fail_value(std::string(a.name) + " overlaps " + b.name + " in memory" +
                 ((&a == in_place_out || &b == in_place_out) && (&a == in_place_in || &b == in_place_in)
                      ? " (in place is allowed only as the very same array)"
                      : ""));
    }
  }
}

void check_params(const pybn_params *params) {
  if (!params) fail_value("params is NULL");
  if (!std::isfinite(params->eps) || params->eps < 0)
    fail_value("eps must be finite and >= 0, got " + std::to_string(params->eps));
  if (!(params->momentum >= 0.0 && params->momentum <= 1.0))
    fail_value("momentum must be in [0, 1], got " + std::to_string(params->momentum));
  if (params->backend < PYBN_BACKEND_AUTO || params->backend > PYBN_BACKEND_CUDNN)
    fail_value("backend must be a pybn_backend value, got " + std::to_string(params->backend));
}

int resolve_axis(const pybn_params *params, const Tensor &data) {
  if (data.ndim < 1) fail_value("data must have at least one dimension");
  const int axis = params->axis < 0 ? params->axis + data.ndim : params->axis;
  if (axis < 0 || axis >= data.ndim)
    fail_value("axis " + std::to_string(params->axis) + " is out of range for data with " +
               std::to_string(data.ndim) + " dimension" + (data.ndim == 1 ? "" : "s"));
  return axis;
}

Tensor required(const pybn_tensor *t, const char *name) {
  if (!t) fail_value(std::string(name) + " is NULL");
  return describe(t, name);
}

View data_view(const Tensor &data, int axis) {
  View view;
  if (!dense_view(data, axis, view))
    fail_value("data must be dense (C order or a permutation of it, such as channels_last); "
               "copy it to a contiguous array first");
  return view;
}

GradReq grad_req(int32_t value, const char *name) {
  if (value != PYBN_GRAD_WRITE && value != PYBN_GRAD_ADD && value != PYBN_GRAD_NULL)
    fail_value(std::string(name) + " must be write, add or null, got " + std::to_string(value));
  return static_cast<GradReq>(value);
}

Backend choose_backend(const pybn_params *params, const Tensor &data) {
  const pybn_device &dev = data.raw->device;
  const int requested = params->backend;
  if (is_host(dev)) {
    if (requested == PYBN_BACKEND_AUTO || requested == PYBN_BACKEND_CPU) return Backend::cpu;
    fail_value(std::string("backend ") + pybn_backend_name(static_cast<pybn_backend>(requested)) +
               " was requested but data is in host memory");
  }
  if (is_cuda(dev)) {
    if (requested == PYBN_BACKEND_CPU) fail_value("backend cpu was requested but data is on " + device_string(dev));
    fail_not_supported("data is on " + device_string(dev) +
                       " but this pybn was built without a CUDA backend (CPU only)");
  }
  fail_value("data is on an unsupported " + device_string(dev));
}

// What both directions need to know about data: dtype, (outer, C, inner) view, and whether
// batch statistics are used (which needs at least one item per channel).
struct DataFacts {
  DType dtype;
  View view;
  bool batch_stats;
};

DataFacts data_facts(const pybn_params *params, const Tensor &data) {
  DataFacts facts;
  facts.dtype = data_dtype(data);
  const int axis = resolve_axis(params, data);
  facts.view = data_view(data, axis);
  facts.batch_stats = params->training && !params->use_global_stats;
  if (facts.batch_stats && data.shape[axis] > 0 && facts.view.items_per_channel() == 0)
    fail_value("data has no items per channel (M == 0): training needs at least one; data shape " +
               shape_string(data.shape.data(), data.ndim));
  return facts;
}

}  // namespace

Backend select_backend(const pybn_params *params, const pybn_tensor *data_raw) {
  check_params(params);
  const Tensor data = required(data_raw, "data");
  resolve_axis(params, data);
  return choose_backend(params, data);
}

ForwardPlan plan_forward(const pybn_params *params, const pybn_tensor *data_raw,
                         const pybn_tensor *gamma_raw, const pybn_tensor *beta_raw,
                         const pybn_tensor *moving_mean_raw, const pybn_tensor *moving_var_raw,
                         const pybn_tensor *y_raw, const pybn_tensor *mean_raw,
                         const pybn_tensor *invstd_raw) {
  check_params(params);
  const Tensor data = required(data_raw, "data");
  const Tensor gamma = required(gamma_raw, "gamma"), beta = required(beta_raw, "beta");
  const Tensor moving_mean = required(moving_mean_raw, "moving_mean");
  const Tensor moving_var = required(moving_var_raw, "moving_var");
  const Tensor y = required(y_raw, "out (y)");
  const Tensor mean = describe(mean_raw, "mean"), invstd = describe(invstd_raw, "invstd");
  if (params->output_mean_var && (!mean || !invstd))
    fail_value("output_mean_var is set but the mean or invstd output is NULL");

  ForwardPlan plan;
  const DataFacts facts = data_facts(params, data);
  const int64_t C = facts.view.channels;
  plan.dtype = facts.dtype;
  plan.view = facts.view;
  plan.batch_stats = facts.batch_stats;

  plan.gamma = stat_vector(gamma, C, plan.dtype, data);
  plan.beta = stat_vector(beta, C, plan.dtype, data);
  plan.moving_mean = stat_vector(moving_mean, C, plan.dtype, data);
  plan.moving_var = stat_vector(moving_var, C, plan.dtype, data);
  if (mean) plan.mean = stat_vector(mean, C, plan.dtype, data);
  if (invstd) plan.invstd = stat_vector(invstd, C, plan.dtype, data);
  require_like_data(y, data, plan.dtype, "written");

  const bool fix_gamma = params->fix_gamma != 0;
  check_overlaps({{&data, false}, {&gamma, fix_gamma}, {&beta, false}, {&moving_mean, plan.batch_stats},
                  {&moving_var, plan.batch_stats}, {&y, true}, {&mean, true}, {&invstd, true}},
                 &y, &data);

  plan.backend = choose_backend(params, data);
  plan.stream = params->stream;
  plan.x = data.base;
  plan.y = y.base;
  plan.eps = params->eps;
  plan.momentum = params->momentum;
  plan.fix_gamma = fix_gamma;
  return plan;
}

BackwardPlan plan_backward(const pybn_params *params, const pybn_tensor *dy_raw,
                           const pybn_tensor *data_raw, const pybn_tensor *gamma_raw,
                           const pybn_tensor *mean_raw, const pybn_tensor *invstd_raw,
                           const pybn_tensor *dx_raw, const pybn_tensor *dgamma_raw,
                           const pybn_tensor *dbeta_raw) {
  check_params(params);
  BackwardPlan plan;
  plan.req_data = grad_req(params->grad_req_data, "grad_req_data");
  plan.req_gamma = grad_req(params->grad_req_gamma, "grad_req_gamma");
  plan.req_beta = grad_req(params->grad_req_beta, "grad_req_beta");
  const Tensor dy = required(dy_raw, "dy"), data = required(data_raw, "data");
  const Tensor gamma = required(gamma_raw, "gamma");
  const Tensor mean = required(mean_raw, "mean"), invstd = required(invstd_raw, "invstd");
  const bool want_dx = plan.req_data != GradReq::null, want_dgamma = plan.req_gamma != GradReq::null,
             want_dbeta = plan.req_beta != GradReq::null;
  const Tensor dx = want_dx ? required(dx_raw, "dx") : Tensor{};
  const Tensor dgamma = want_dgamma ? required(dgamma_raw, "dgamma") : Tensor{};
  const Tensor dbeta = want_dbeta ? required(dbeta_raw, "dbeta") : Tensor{};

  const DataFacts facts = data_facts(params, data);
  const int64_t C = facts.view.channels;
  plan.dtype = facts.dtype;
  plan.view = facts.view;
  plan.batch_stats = facts.batch_stats;
  require_like_data(dy, data, plan.dtype, "read");
  plan.gamma = stat_vector(gamma, C, plan.dtype, data);
  plan.mean = stat_vector(mean, C, plan.dtype, data);
  plan.invstd = stat_vector(invstd, C, plan.dtype, data);
  if (want_dx) require_like_data(dx, data, plan.dtype, "written");
  if (want_dgamma) plan.dgamma = stat_vector(dgamma, C, plan.dtype, data);
  if (want_dbeta) plan.dbeta = stat_vector(dbeta, C, plan.dtype, data);

  check_overlaps({{&dy, false}, {&data, false}, {&gamma, false}, {&mean, false}, {&invstd, false},
                  {&dx, want_dx}, {&dgamma, want_dgamma}, {&dbeta, want_dbeta}},
                 nullptr, nullptr);

  plan.backend = choose_backend(params, data);
  plan.stream = params->stream;
  plan.dy = dy.base;
  plan.x = data.base;
  plan.dx = dx ? dx.base : nullptr;
  plan.fix_gamma = params->fix_gamma != 0;
  return plan;
}

}  // namespace pybn
