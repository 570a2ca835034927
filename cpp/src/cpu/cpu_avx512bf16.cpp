// The CPU kernels built for avx512 plus AVX512_BF16 (flags set in CMakeLists.txt): the same
// kernels, with bfloat16 results narrowed by vcvtneps2bf16 (Elem<bfloat16_t>).
#define PYBN_CPU_NS isa_avx512bf16
#include "kernels.inc"
