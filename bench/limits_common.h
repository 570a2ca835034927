// What bench/pattern_limits.cpp and bench/row_limits.cpp share: timing, 2 MB-page buffers,
// test data, pybn's training forward on the same buffers as their bare loops, and the rounds
// that time every contestant once each, in a fresh order. x86-64 with AVX-512 (the data fill
// converts to float16 with F16C).
#pragma once

#include <immintrin.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu_tensor.h"
#include "pybn/pybn.h"

namespace limits {

inline double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The command line both programs start with: dtype [N C HW] [rounds]. False (after the usage
// line, `extra` naming further arguments) where the dtype is not one of the three.
struct Arguments {
  std::string dtype;
  int64_t N, C, HW;
  int rounds, itemsize;
};
inline bool parse_arguments(int argc, char **argv, Arguments &a, const char *extra) {
  a.dtype = argc > 1 ? argv[1] : "";
  if (a.dtype != "float32" && a.dtype != "float64" && a.dtype != "float16") {
    std::fprintf(stderr, "usage: %s float32|float64|float16 [N C HW] [rounds]%s\n", argv[0], extra);
    return false;
  }
  if (argc > 4) {
    a.N = std::atol(argv[2]);
    a.C = std::atol(argv[3]);
    a.HW = std::atol(argv[4]);
  }
  a.rounds = argc > 5 ? std::atoi(argv[5]) : 21;
  a.itemsize = a.dtype == "float16" ? 2 : a.dtype == "float32" ? 4 : 8;
  return true;
}

// Zeroed memory in 2 MB pages where the kernel gives them (as NumPy's large arrays get).
inline void *huge_alloc(int64_t bytes) {
  const int64_t page = int64_t(2) << 20, size = (bytes + page - 1) / page * page;
  void *p = std::aligned_alloc(size_t(page), size_t(size));
  if (!p) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(1);
  }
  madvise(p, size_t(size), MADV_HUGEPAGE);
  std::memset(p, 0, size_t(size));
  return p;
}

// x of (N, C, HW) elements of `itemsize` bytes: values around a different mean in each channel,
// all finite in float16.
inline void fill_around_channel_means(void *x, int64_t N, int64_t C, int64_t HW, int itemsize) {
  std::srand(0);
  for (int64_t i = 0; i < N * C * HW; ++i) {
    const float v = float((i / HW) % C) * 0.01f + float(std::rand() % 2001 - 1000) * 1e-3f;
    if (itemsize == 2)
      static_cast<uint16_t *>(x)[i] = uint16_t(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
    else if (itemsize == 4)
      static_cast<float *>(x)[i] = v;
    else
      static_cast<double *>(x)[i] = v;
  }
}

// pybn's training forward of x into y, C-contiguous (N, C, HW) views, on 2 threads (as the
// copies and the patterns); gamma, beta and the moving statistics all ones in the parameter
// type (their values do not change the time).
class TrainingCall {
 public:
  TrainingCall(void *x, void *y, int64_t N, int64_t C, int64_t HW, int itemsize)
      : data_shape_{N, C, HW}, channel_shape_{C}, param_size_(itemsize == 2 ? 4 : itemsize),
        params32_(size_t(4 * C), 1.0f), params64_(size_t(4 * C), 1.0) {
    x_ = cpu_tensor(x, 3, data_shape_, itemsize * 8);
    y_ = cpu_tensor(y, 3, data_shape_, itemsize * 8);
    char *const base = param_size_ == 4 ? reinterpret_cast<char *>(params32_.data()) : reinterpret_cast<char *>(params64_.data());
    for (int k = 0; k < 4; ++k) stats_[k] = cpu_tensor(base + k * C * param_size_, 1, channel_shape_, param_size_ * 8);
    pybn_cpu_set_num_threads(2);
    pybn_params_default(&params_);
    params_.fix_gamma = 0;
    params_.backend = PYBN_BACKEND_CPU;
  }
  TrainingCall(const TrainingCall &) = delete;
  TrainingCall &operator=(const TrainingCall &) = delete;
  void operator()() const {
    if (pybn_forward(&params_, &x_, &stats_[0], &stats_[1], &stats_[2], &stats_[3], &y_, nullptr, nullptr) != PYBN_SUCCESS) {
      std::fprintf(stderr, "pybn_forward: %s\n", pybn_last_error());
      std::exit(1);
    }
  }

 private:
  int64_t data_shape_[3], channel_shape_[1];
  int param_size_;
  std::vector<float> params32_;
  std::vector<double> params64_;
  pybn_tensor x_, y_, stats_[4];  // stats_: gamma, beta, moving mean, moving var
  pybn_params params_;
};

// With FLUSH_MB set, a read of that many MB of other memory (untimed) before each call, so
// that the last-level cache holds none of the contestant's input.
class CacheFlush {
 public:
  CacheFlush() {
    const char *mb = std::getenv("FLUSH_MB");
    bytes_ = mb ? std::atol(mb) * (int64_t(1) << 20) : 0;
    buffer_ = bytes_ > 0 ? static_cast<char *>(huge_alloc(bytes_)) : nullptr;
  }
  ~CacheFlush() { std::free(buffer_); }
  CacheFlush(const CacheFlush &) = delete;
  CacheFlush &operator=(const CacheFlush &) = delete;
  void operator()() {
    if (bytes_ == 0) return;
    int64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) num_threads(2)
    for (int64_t i = 0; i < bytes_; i += 64) sum += buffer_[i];
    sink_ = sink_ + sum;
  }

 private:
  int64_t bytes_;
  char *buffer_;
  volatile int64_t sink_ = 0;
};

// Times every contestant once a round, each round in a fresh order (so that no contestant
// always follows the same one), after two warm-up rounds; returns each one's times in seconds.
inline std::vector<std::vector<double>> time_rounds(const std::vector<std::function<void()>> &contestants, int rounds,
                                                    CacheFlush &flush) {
  std::vector<std::vector<double>> times(contestants.size());
  std::vector<int> order(contestants.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = int(j);
  std::mt19937 shuffle(1);
  for (int r = -2; r < rounds; ++r) {
    std::shuffle(order.begin(), order.end(), shuffle);
    for (const int j : order) {
      flush();
      const double t0 = seconds();
      contestants[size_t(j)]();
      const double t = seconds() - t0;
      if (r >= 0) times[size_t(j)].push_back(t);
    }
  }
  return times;
}

}  // namespace limits
