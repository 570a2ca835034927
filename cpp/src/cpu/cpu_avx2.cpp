// The CPU kernels built for the avx2 instruction set (flags set in CMakeLists.txt).
#define PYBN_CPU_NS isa_avx2
#include "kernels.inc"
