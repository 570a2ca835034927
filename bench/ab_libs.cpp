// Compares builds of libpybn.so in one process: dlopens each, then times one shape's call
// against them in alternation, one call per build per sample, the order reversed every other
// sample, so that whatever the shared machine does to a stretch of time falls on every build
// alike. Prints each build's median time, its ratio to the first build's median, and the
// median and quartiles of the per-sample ratios (the steadier figure where the machine swings).
//
//   g++ -O2 -I$(python -c 'import pybn; print(pybn.get_include())') bench/ab_libs.cpp
//       -o /tmp/ab_libs -ldl                                          (one line)
//   /tmp/ab_libs /tmp/build_a/libpybn.so,/tmp/build_b/libpybn.so float32 32 256 3136 train 200 2
//   (CALL_TIMES_OUT_OFFSET=16: the outputs 16 bytes past where x lies in its 4 KB page)
//
// The first argument lists the builds (2 to 26 paths, commas between, each a different
// file: dlopen of a path already open returns the library loaded before); the rest are
// call_setup.h's: dtype outer C inner [train|infer|bwd] [calls] [threads]. calls (default 200)
// is the number of samples. Builds compared this way should be built alike (bench/README.md,
// "Calls timed from C"), and a build against a copy of itself shows the noise.
#include "call_setup.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace {

// The C ABI functions of the library at `path`, loaded apart from any other build.
bool load(const std::string &path, call_setup::Api &api) {
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::fprintf(stderr, "%s\n", dlerror());
    return false;
  }
  api.forward = reinterpret_cast<decltype(api.forward)>(dlsym(handle, "pybn_forward"));
  api.backward = reinterpret_cast<decltype(api.backward)>(dlsym(handle, "pybn_backward"));
  api.params_default = reinterpret_cast<decltype(api.params_default)>(dlsym(handle, "pybn_params_default"));
  api.set_threads = reinterpret_cast<decltype(api.set_threads)>(dlsym(handle, "pybn_cpu_set_num_threads"));
  api.last_error = reinterpret_cast<decltype(api.last_error)>(dlsym(handle, "pybn_last_error"));
  if (!api.forward || !api.backward || !api.params_default || !api.set_threads || !api.last_error) {
    std::fprintf(stderr, "%s: not a pybn library (a C ABI function is missing)\n", path.c_str());
    return false;
  }
  return true;
}

// The value a fraction q of the way through sorted `v`.
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[size_t(q * double(v.size() - 1) + 0.5)];
}

}  // namespace

int main(int argc, char **argv) {
  std::vector<std::string> paths;
  if (argc > 1) {
    const std::string list = argv[1];
    for (size_t start = 0; start <= list.size();) {
      const size_t end = std::min(list.find(',', start), list.size());
      if (end > start) paths.push_back(list.substr(start, end - start));
      start = end + 1;
    }
  }
  call_setup::Request request;
  if (paths.size() < 2 || paths.size() > 26 || !request.parse(argc - 2, argv + 2, 200)) {
    std::fprintf(stderr,
                 "usage: %s LIB_A,LIB_B[,...] float16|float32|float64 outer C inner [train|infer|bwd] [calls] "
                 "[threads]\n",
                 argv[0]);
    return 2;
  }
  const size_t builds = paths.size();
  std::vector<call_setup::Api> apis(builds);
  for (size_t b = 0; b < builds; ++b)
    if (!load(paths[b], apis[b])) return 1;
  call_setup::Call call(request);
  for (const call_setup::Api &api : apis)
    if (!call.prepare(api)) return 1;
  for (const call_setup::Api &api : apis)  // one untimed call each: pages touched, threads started
    if (!call.run(api)) return 1;

  std::vector<std::vector<double>> times(builds), ratios(builds);
  std::vector<double> sample(builds);
  const long progress_every = std::max(1L, request.calls / 10);
  for (long s = 0; s < request.calls; ++s) {
    for (size_t k = 0; k < builds; ++k) {
      const size_t b = s % 2 == 0 ? k : builds - 1 - k;
      const double start = call_setup::now();
      if (!call.run(apis[b])) return 1;
      sample[b] = call_setup::now() - start;
    }
    for (size_t b = 0; b < builds; ++b) {
      times[b].push_back(sample[b]);
      ratios[b].push_back(sample[b] / sample[0]);
    }
    if ((s + 1) % progress_every == 0) std::fprintf(stderr, "\r%ld/%ld samples", s + 1, request.calls);
  }
  std::fprintf(stderr, "\n");

  std::printf("%s %s %lldx%lldx%lld, outputs %zu bytes on, %d threads (0: the library's default), %ld samples\n",
              request.op.c_str(), request.dtype.c_str(), (long long)request.outer, (long long)request.channels,
              (long long)request.inner, request.out_offset, request.threads, request.calls);
  const double first = quantile(times[0], 0.5);
  for (size_t b = 0; b < builds; ++b) {
    const double median = quantile(times[b], 0.5);
    std::printf("  %c median %.2f us, x%.3f of A; per-sample ratio median x%.3f (quartiles %.3f-%.3f)  %s\n",
                char('A' + b), median * 1e6, median / first, quantile(ratios[b], 0.5), quantile(ratios[b], 0.25),
                quantile(ratios[b], 0.75), paths[b].c_str());
  }
  return 0;
}
