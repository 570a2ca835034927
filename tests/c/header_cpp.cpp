// The public header must compile as C++ too (extern "C" linkage, no C-only constructs).
#include <pybn/pybn.h>

#include <cstdio>

int main() {
  pybn_params params;
  pybn_params_default(&params);
  std::printf("C++: pybn %s, default eps %g, momentum %g\n", pybn_version_string(), params.eps, params.momentum);
  return pybn_abi_version() == PYBN_ABI_VERSION && params.axis == 1 ? 0 : 1;
}
