// The CPU kernels built for the avx512 instruction set (flags set in CMakeLists.txt).
#define PYBN_CPU_NS isa_avx512
#include "kernels.inc"
