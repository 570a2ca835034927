// Times pybn's C ABI calls in a loop, in one process: no Python, no NumPy, buffers on 2 MB
// pages (transparent huge pages where the system allows), against the library it is linked
// to. To compare two builds of the library, use ab_libs.cpp (both in one process, called in
// alternation), not two runs of this program: separate processes on a shared machine differ
// by more than most changes do.
//
//   lib=$(python -c 'import pybn, os; print(os.path.dirname(pybn.get_library()))')
//   g++ -O2 -I$(python -c 'import pybn; print(pybn.get_include())') bench/call_times.cpp
//       -o /tmp/call_times -L$lib -l:libpybn.so -Wl,-rpath,$lib        (one line)
//   /tmp/call_times float32 1 1024 49 [train|infer|bwd] [calls] [threads]
//   (CALL_TIMES_OUT_OFFSET=16: the outputs 16 bytes past where x lies in its 4 KB page)
//
// The arguments and buffers are call_setup.h's. Each sample times 3 calls; the program prints
// the median and the fastest of `calls` samples (default 2000) per call, in microseconds.
#include "call_setup.h"

#include <algorithm>
#include <cstdio>
#include <vector>

int main(int argc, char **argv) {
  call_setup::Request request;
  if (!request.parse(argc - 1, argv + 1, 2000)) {
    std::fprintf(stderr, "usage: %s float16|float32|float64 outer C inner [train|infer|bwd] [calls] [threads]\n", argv[0]);
    return 2;
  }
  const call_setup::Api api = {pybn_forward, pybn_backward, pybn_params_default, pybn_cpu_set_num_threads,
                               pybn_last_error};
  call_setup::Call call(request);
  if (!call.prepare(api)) return 1;
  std::vector<double> samples;
  samples.reserve(size_t(request.calls));
  for (long s = 0; s < request.calls; ++s) {
    const double start = call_setup::now();
    for (int k = 0; k < 3; ++k)
      if (!call.run(api)) return 1;
    samples.push_back((call_setup::now() - start) / 3);
  }
  std::sort(samples.begin(), samples.end());
  std::printf("pybn/%s %s %lldx%lldx%lld: median %.2f us, fastest %.2f us (%ld samples of 3 calls)\n", request.op.c_str(),
              request.dtype.c_str(), (long long)request.outer, (long long)request.channels, (long long)request.inner,
              samples[samples.size() / 2] * 1e6, samples.front() * 1e6, request.calls);
  return 0;
}
