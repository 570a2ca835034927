/* The pybn_tensor of a CPU float array, shared by the C test programs. strides NULL: C order. */
#ifndef PYBN_TEST_TENSOR_H_
#define PYBN_TEST_TENSOR_H_

#include <string.h>

#include <pybn/pybn.h>

static inline pybn_tensor tensor(void *data, int bits, int ndim, const int64_t *shape, const int64_t *strides) {
  pybn_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = PYBN_DEVICE_CPU;
  t.ndim = ndim;
  t.dtype.code = PYBN_DTYPE_FLOAT;
  t.dtype.bits = (uint8_t)bits;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = strides;
  return t;
}

#endif /* PYBN_TEST_TENSOR_H_ */
