// Times pybn's C ABI calls in a loop, in one process: no Python, no NumPy, buffers on 2 MB
// pages (transparent huge pages where the system allows). For the in-process comparisons of
// bench/RESULTS.md: two builds of libpybn.so timed in alternation, each run of this program
// loading one of them (LD_LIBRARY_PATH, with the program linked without an rpath, or
// LD_PRELOAD), on the same shape.
//
//   lib=$(python -c 'import pybn, os; print(os.path.dirname(pybn.get_library()))')
//   g++ -O2 -I$(python -c 'import pybn; print(pybn.get_include())') bench/call_times.cpp
//       -o /tmp/call_times -L$lib -l:libpybn.so -Wl,-rpath,$lib        (one line)
//   /tmp/call_times float32 1 1024 49 [train|infer|bwd] [calls] [threads]
//   (CALL_TIMES_OUT_OFFSET=16: the outputs 16 bytes past where x lies in its 4 KB page)
//
// The shape is (outer, C, inner), the channel axis in the middle (NCHW as N x C x H*W, 2-D as
// N x C x 1). Each sample times 3 calls; the program prints the median and the fastest of
// `calls` samples (default 2000) per call, in microseconds.
#include "cpu_tensor.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

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
void fill(void *data, int64_t count, int bits) {
  static const uint16_t halves[] = {0x3c00, 0x4000, 0x3800, 0x4200, 0x3e00, 0x4400, 0x3a00, 0xbc00};
  for (int64_t i = 0; i < count; ++i) {
    const double v = double(i % 977) * 0.001;
    if (bits == 64) static_cast<double *>(data)[i] = v;
    else if (bits == 32) static_cast<float *>(data)[i] = float(v);
    else static_cast<uint16_t *>(data)[i] = halves[i % 8];
  }
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

int main(int argc, char **argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s float16|float32|float64 outer C inner [train|infer|bwd] [calls] [threads]\n", argv[0]);
    return 2;
  }
  const std::string dtype = argv[1];
  const int64_t outer = std::atoll(argv[2]), channels = std::atoll(argv[3]), inner = std::atoll(argv[4]);
  const std::string op = argc > 5 ? argv[5] : "train";
  const long calls = argc > 6 ? std::atol(argv[6]) : 2000;
  const int threads = argc > 7 ? std::atoi(argv[7]) : 0;
  const int bits = dtype == "float16" ? 16 : dtype == "float32" ? 32 : dtype == "float64" ? 64 : 0;
  if (bits == 0 || outer < 1 || channels < 1 || inner < 1 || calls < 1 ||
      (op != "train" && op != "infer" && op != "bwd")) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  const int param_bits = bits == 16 ? 32 : bits;
  const int64_t count = outer * channels * inner;
  const size_t bytes = size_t(count) * size_t(bits / 8);
  // CALL_TIMES_OUT_OFFSET=n: y and dx start n bytes (0-4095) past their 2 MB boundary, x and dy
  // on it. Where an output lies against its inputs within a 4 KB page decides whether its
  // stores delay the loads after them (bench/RESULTS.md, "Stop 41"): NumPy's heap puts an array
  // allocated after another of a whole number of pages 16 bytes further on.
  const char *offset_setting = std::getenv("CALL_TIMES_OUT_OFFSET");
  const size_t out_offset = offset_setting ? size_t(std::atol(offset_setting)) % 4096 : 0;
  Buffer x(bytes), y(bytes + out_offset), dx(bytes + out_offset), params(size_t(8 * channels) * size_t(param_bits / 8));
  fill(x.data, count, bits);
  void *const y_data = static_cast<char *>(y.data) + out_offset, *const dx_data = static_cast<char *>(dx.data) + out_offset;
  char *const p = static_cast<char *>(params.data);
  const size_t stride = size_t(channels) * size_t(param_bits / 8);
  for (int k = 0; k < 4; ++k) fill(p + k * stride, channels, param_bits);  // gamma, beta, moving mean, var > 0

  const int64_t shape[3] = {outer, channels, inner}, cshape[1] = {channels};
  pybn_tensor tx = cpu_tensor(x.data, 3, shape, bits), ty = cpu_tensor(y_data, 3, shape, bits), tdx = cpu_tensor(dx_data, 3, shape, bits);
  pybn_tensor c[8];
  for (int k = 0; k < 8; ++k) c[k] = cpu_tensor(p + k * stride, 1, cshape, param_bits);
  // c: gamma, beta, moving_mean, moving_var, mean, invstd, dgamma, dbeta
  pybn_params params_in;
  pybn_params_default(&params_in);
  params_in.fix_gamma = 0;
  params_in.training = op != "infer";
  if (threads > 0) pybn_cpu_set_num_threads(threads);
  if (op == "bwd" && pybn_forward(&params_in, &tx, &c[0], &c[1], &c[2], &c[3], &ty, &c[4], &c[5]) != 0) {
    std::fprintf(stderr, "%s\n", pybn_last_error());
    return 1;
  }
  auto call = [&] {
    return op == "bwd" ? pybn_backward(&params_in, &ty, &tx, &c[0], &c[4], &c[5], &tdx, &c[6], &c[7])
                       : pybn_forward(&params_in, &tx, &c[0], &c[1], &c[2], &c[3], &ty, nullptr, nullptr);
  };
  std::vector<double> samples;
  samples.reserve(size_t(calls));
  for (long s = 0; s < calls; ++s) {
    const double start = now();
    for (int k = 0; k < 3; ++k)
      if (call() != 0) {
        std::fprintf(stderr, "%s\n", pybn_last_error());
        return 1;
      }
    samples.push_back((now() - start) / 3);
  }
  std::sort(samples.begin(), samples.end());
  std::printf("pybn/%s %s %lldx%lldx%lld: median %.2f us, fastest %.2f us (%ld samples of 3 calls)\n", op.c_str(),
              dtype.c_str(), (long long)outer, (long long)channels, (long long)inner, samples[samples.size() / 2] * 1e6,
              samples.front() * 1e6, calls);
  return 0;
}
