// One shape's pybn_forward / pybn_backward call, set up from the command line, for the C++
// programs that time calls (call_times.cpp: the library it is linked to; ab_libs.cpp: several
// builds dlopened into one process). The calls go through a table of function pointers, so
// the same buffers and arguments serve a linked library and a dlopened one.
//
// Arguments: dtype outer C inner [train|infer|bwd] [calls] [threads]. The shape is (outer, C,
// inner), the channel axis in the middle (NCHW as N x C x H*W, 2-D as N x C x 1). Buffers lie
// on 2 MB boundaries (and pages, where allowed); CALL_TIMES_OUT_OFFSET=n moves y and dx n
// bytes (0-4095) on.
#pragma once

#include "cpu_tensor.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace call_setup {

constexpr size_t kPage = size_t(2) << 20;

// A zeroed buffer of at least `bytes`, on 2 MB boundaries (and pages, where allowed).
struct Buffer {
  void *data = nullptr;
  explicit Buffer(size_t bytes) {
    const size_t size = (bytes + kPage - 1) / kPage * kPage;
    data = std::aligned_alloc(kPage, size);
    if (data == nullptr) {
      std::fprintf(stderr, "out of memory\n");
      std::exit(1);
    }
#if defined(MADV_HUGEPAGE)
    madvise(data, size, MADV_HUGEPAGE);
#endif
    std::memset(data, 0, size);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;
};

// Data that is not all one value: a ramp of 977 steps (float16 from a table of exact halves).
inline void fill(void *data, int64_t count, int bits) {
  static const uint16_t halves[] = {0x3c00, 0x4000, 0x3800, 0x4200, 0x3e00, 0x4400, 0x3a00, 0xbc00};
  for (int64_t i = 0; i < count; ++i) {
    const double v = double(i % 977) * 0.001;
    if (bits == 64) static_cast<double *>(data)[i] = v;
    else if (bits == 32) static_cast<float *>(data)[i] = float(v);
    else static_cast<uint16_t *>(data)[i] = halves[i % 8];
  }
}

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The C ABI functions a call needs, from a linked library or dlsym.
struct Api {
  decltype(&pybn_forward) forward;
  decltype(&pybn_backward) backward;
  decltype(&pybn_params_default) params_default;
  decltype(&pybn_cpu_set_num_threads) set_threads;
  decltype(&pybn_last_error) last_error;
};

// What the command line asks for.
struct Request {
  std::string dtype, op;
  int64_t outer = 0, channels = 0, inner = 0;
  long calls = 0;
  int threads = 0, bits = 0;
  size_t out_offset = 0;

  // argv[0..argc) holds dtype outer C inner [op] [calls] [threads]; false where they are bad.
  bool parse(int argc, char **argv, long default_calls) {
    if (argc < 4) return false;
    dtype = argv[0];
    outer = std::atoll(argv[1]);
    channels = std::atoll(argv[2]);
    inner = std::atoll(argv[3]);
    op = argc > 4 ? argv[4] : "train";
    calls = argc > 5 ? std::atol(argv[5]) : default_calls;
    threads = argc > 6 ? std::atoi(argv[6]) : 0;
    bits = dtype == "float16" ? 16 : dtype == "float32" ? 32 : dtype == "float64" ? 64 : 0;
    // Where an output lies against its inputs within a 4 KB page decides whether its stores
    // delay the loads after them (bench/RESULTS.md, "Stop 41"): NumPy's heap puts an array
    // allocated after another of a whole number of pages 16 bytes further on.
    const char *offset_setting = std::getenv("CALL_TIMES_OUT_OFFSET");
    out_offset = offset_setting ? size_t(std::atol(offset_setting)) % 4096 : 0;
    return bits != 0 && outer >= 1 && channels >= 1 && inner >= 1 && calls >= 1 &&
           (op == "train" || op == "infer" || op == "bwd");
  }
};

// The buffers and tensors of one request: x (and dy, which is y) on a 2 MB boundary, y and dx
// out_offset bytes past one, the eight per-channel vectors side by side.
class Call {
 public:
  explicit Call(const Request &r)
      : request_(r),
        param_bits_(r.bits == 16 ? 32 : r.bits),
        bytes_(size_t(r.outer * r.channels * r.inner) * size_t(r.bits / 8)),
        x_(bytes_),
        y_(bytes_ + r.out_offset),
        dx_(bytes_ + r.out_offset),
        channel_data_(size_t(8 * r.channels) * size_t(param_bits_ / 8)) {
    shape_[0] = r.outer;
    shape_[1] = r.channels;
    shape_[2] = r.inner;
    channel_shape_[0] = r.channels;
    fill(x_.data, r.outer * r.channels * r.inner, r.bits);
    char *const p = static_cast<char *>(channel_data_.data);
    const size_t stride = size_t(r.channels) * size_t(param_bits_ / 8);
    for (int k = 0; k < 4; ++k) fill(p + k * stride, r.channels, param_bits_);  // gamma, beta, moving mean, var > 0
    tx_ = cpu_tensor(x_.data, 3, shape_, r.bits);
    ty_ = cpu_tensor(static_cast<char *>(y_.data) + r.out_offset, 3, shape_, r.bits);
    tdx_ = cpu_tensor(static_cast<char *>(dx_.data) + r.out_offset, 3, shape_, r.bits);
    // gamma, beta, moving_mean, moving_var, mean, invstd, dgamma, dbeta
    for (int k = 0; k < 8; ++k) c_[k] = cpu_tensor(p + k * stride, 1, channel_shape_, param_bits_);
  }

  // Sets the parameters and threads; for the backward, runs the forward that gives it y (as
  // dy), mean and invstd. False (the library's message printed) where a call fails.
  bool prepare(const Api &api) {
    api.params_default(&settings_);
    settings_.fix_gamma = 0;
    settings_.training = request_.op != "infer";
    if (request_.threads > 0) api.set_threads(request_.threads);
    if (request_.op != "bwd") return true;
    return report(api, api.forward(&settings_, &tx_, &c_[0], &c_[1], &c_[2], &c_[3], &ty_, &c_[4], &c_[5]));
  }

  // One timed call; false (the message printed) where it fails.
  bool run(const Api &api) {
    return report(api, request_.op == "bwd"
                           ? api.backward(&settings_, &ty_, &tx_, &c_[0], &c_[4], &c_[5], &tdx_, &c_[6], &c_[7])
                           : api.forward(&settings_, &tx_, &c_[0], &c_[1], &c_[2], &c_[3], &ty_, nullptr, nullptr));
  }

 private:
  static bool report(const Api &api, int status) {
    if (status != 0) std::fprintf(stderr, "%s\n", api.last_error());
    return status == 0;
  }

  Request request_;
  int param_bits_;
  size_t bytes_;
  Buffer x_, y_, dx_, channel_data_;
  int64_t shape_[3], channel_shape_[1];
  pybn_tensor tx_, ty_, tdx_, c_[8];
  pybn_params settings_;
};

}  // namespace call_setup
