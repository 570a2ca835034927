// The pybn_tensor of a C-contiguous CPU float array (strides NULL), for the C++ programs of
// bench/ (pattern_limits.cpp and row_limits.cpp through limits_common.h, strip_limits.cpp, call_setup.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "pybn/pybn.h"

inline pybn_tensor cpu_tensor(void *data, int ndim, const int64_t *shape, int bits) {
  pybn_tensor t;
  std::memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = PYBN_DEVICE_CPU;
  t.ndim = ndim;
  t.dtype.code = PYBN_DTYPE_FLOAT;
  t.dtype.bits = uint8_t(bits);
  t.dtype.lanes = 1;
  t.shape = shape;
  return t;
}
