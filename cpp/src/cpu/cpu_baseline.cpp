// The CPU kernels built for the baseline instruction set (flags set in CMakeLists.txt).
#define PYBN_CPU_NS isa_baseline
#include "kernels.inc"
