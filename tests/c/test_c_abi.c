/* Tests of the C ABI from C99 (compiled with -std=c99 -pedantic -Werror): versions, statuses,
 * last-error messages, "nothing written on error", dense layouts through strides, float64,
 * grad_req null with NULL buffers, CUDA memory refused without the CUDA backend. Numbers are
 * checked against sums computed here in double. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <pybn/pybn.h>

#include "test_tensor.h"

static int failures = 0;
#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

static void test_versions(void) {
  EXPECT(pybn_version() == PYBN_VERSION);
  EXPECT(pybn_abi_version() == PYBN_ABI_VERSION);
  EXPECT(strlen(pybn_version_string()) >= 5);
  EXPECT(strcmp(pybn_status_string(PYBN_SUCCESS), "PYBN_SUCCESS") == 0);
  EXPECT(strcmp(pybn_status_string(PYBN_ERROR_INVALID_TYPE), "PYBN_ERROR_INVALID_TYPE") == 0);
  EXPECT(strcmp(pybn_backend_name(PYBN_BACKEND_CPU), "cpu") == 0);
  EXPECT(pybn_backend_built(PYBN_BACKEND_CPU) == 1 && pybn_backend_available(PYBN_BACKEND_CPU) == 1);
  EXPECT(pybn_cpu_num_threads() >= 1);
  EXPECT(strlen(pybn_cpu_isa()) > 0);
}

/* pybn_cpu_set_num_threads: a count replaces OpenMP's (a build without OpenMP stays at 1), 0
 * restores it, a negative count is an error that changes nothing. */
static void test_set_num_threads(void) {
  const int before = pybn_cpu_num_threads();
  EXPECT(pybn_cpu_set_num_threads(-1) == PYBN_ERROR_INVALID_VALUE && strlen(pybn_last_error()) > 0);
  EXPECT(pybn_cpu_num_threads() == before);
  EXPECT(pybn_cpu_set_num_threads(3) == PYBN_SUCCESS);
  EXPECT(pybn_cpu_num_threads() == 3 || (before == 1 && pybn_cpu_num_threads() == 1));
  EXPECT(pybn_cpu_set_num_threads(0) == PYBN_SUCCESS && pybn_cpu_num_threads() == before);
}

/* channels_last: logical (N, C, W) = (2, 3, 4) stored as (N, W, C). Forward, float64. */
static void test_channels_last_float64(void) {
  double x[24], y[24], gamma[3] = {1, 2, 3}, beta[3] = {0.5, -0.5, 1}, mm[3] = {0, 0, 0}, mv[3] = {1, 1, 1};
  double mean[3], invstd[3];
  const int64_t shape[3] = {2, 3, 4}, strides[3] = {12, 1, 3}, cshape[1] = {3};
  pybn_tensor tx, ty, tg, tb, tmm, tmv, tmean, tinv;
  pybn_params p;
  int n, c, w, i;
  for (i = 0; i < 24; ++i) x[i] = 1000.0 * (i % 3) + sin((double)i);
  tx = tensor(x, 64, 3, shape, strides);
  ty = tensor(y, 64, 3, shape, strides);
  tg = tensor(gamma, 64, 1, cshape, NULL);
  tb = tensor(beta, 64, 1, cshape, NULL);
  tmm = tensor(mm, 64, 1, cshape, NULL);
  tmv = tensor(mv, 64, 1, cshape, NULL);
  tmean = tensor(mean, 64, 1, cshape, NULL);
  tinv = tensor(invstd, 64, 1, cshape, NULL);
  pybn_params_default(&p);
  p.fix_gamma = 0;
  p.eps = 1e-5;
  p.momentum = 0.5;
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &tmean, &tinv) == PYBN_SUCCESS);
  for (c = 0; c < 3; ++c) {
    double s = 0, ss = 0, m, v;
    for (n = 0; n < 2; ++n)
      for (w = 0; w < 4; ++w) s += x[n * 12 + w * 3 + c];
    m = s / 8;
    for (n = 0; n < 2; ++n)
      for (w = 0; w < 4; ++w) ss += (x[n * 12 + w * 3 + c] - m) * (x[n * 12 + w * 3 + c] - m);
    v = ss / 8;
    EXPECT(fabs(mean[c] - m) < 1e-9);
    EXPECT(fabs(invstd[c] - 1 / sqrt(v + 1e-5)) < 1e-9);
    EXPECT(fabs(mm[c] - 0.5 * m) < 1e-9);
    EXPECT(fabs(mv[c] - (0.5 + 0.5 * v)) < 1e-9);
    for (n = 0; n < 2; ++n)
      for (w = 0; w < 4; ++w) {
        const int at = n * 12 + w * 3 + c;
        EXPECT(fabs(y[at] - ((x[at] - m) / sqrt(v + 1e-5) * gamma[c] + beta[c])) < 1e-9);
      }
  }
}

/* Bad inputs: a status, a message naming the argument, and untouched buffers. */
static void test_errors_leave_buffers(void) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8], gamma[2] = {3, 3}, beta[2] = {0, 0}, mm[2] = {7, 7}, mv[2] = {9, 9};
  float gamma_wrong[3] = {1, 1, 1};
  const int64_t shape[2] = {4, 2}, cshape[1] = {2}, wrong_shape[1] = {3};
  pybn_tensor tx = tensor(x, 32, 2, shape, NULL), ty = tensor(y, 32, 2, shape, NULL);
  pybn_tensor tg = tensor(gamma, 32, 1, cshape, NULL), tb = tensor(beta, 32, 1, cshape, NULL);
  pybn_tensor tmm = tensor(mm, 32, 1, cshape, NULL), tmv = tensor(mv, 32, 1, cshape, NULL);
  pybn_tensor tbad = tensor(gamma_wrong, 32, 1, wrong_shape, NULL);
  pybn_tensor tx64 = tensor(x, 64, 2, shape, NULL);
  pybn_params p;
  int i;
  for (i = 0; i < 8; ++i) y[i] = -1;
  pybn_params_default(&p);

  EXPECT(pybn_forward(&p, &tx, &tbad, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  EXPECT(strstr(pybn_last_error(), "gamma") != NULL);
  EXPECT(pybn_forward(&p, &tx64, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_TYPE);
  p.axis = 2;
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  EXPECT(strstr(pybn_last_error(), "axis") != NULL);
  p.axis = 1;
  p.momentum = 1.5;
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  EXPECT(strstr(pybn_last_error(), "momentum") != NULL);
  p.momentum = 0.9;
  p.eps = -1;
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  p.eps = 1e-3;
  p.output_mean_var = 1;
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  p.output_mean_var = 0;
  /* y overlapping the moving mean is refused */
  {
    pybn_tensor overlap = tensor(mm, 32, 1, cshape, NULL);
    EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &overlap, NULL) == PYBN_ERROR_INVALID_VALUE);
    EXPECT(strstr(pybn_last_error(), "overlaps") != NULL);
  }
  EXPECT(pybn_forward(NULL, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  EXPECT(pybn_forward(&p, &tx, NULL, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_ERROR_INVALID_VALUE);
  for (i = 0; i < 8; ++i) EXPECT(y[i] == -1);
  EXPECT(gamma[0] == 3 && gamma[1] == 3 && mm[0] == 7 && mv[1] == 9);

  /* and then a good call clears the message */
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_SUCCESS);
  EXPECT(pybn_last_error()[0] == '\0');
  EXPECT(gamma[0] == 1 && gamma[1] == 1); /* fix_gamma (the default) sets gamma to 1 */
  {
    double eps = -1;
    EXPECT(pybn_cudnn_min_epsilon(&eps) == PYBN_ERROR_NOT_SUPPORTED && eps == -1);
  }
}

/* Memory on a CUDA device, with no CUDA backend built: every entry point answers
 * PYBN_ERROR_NOT_SUPPORTED, after the argument checks (a device mismatch is still
 * INVALID_VALUE), and touches nothing. Host buffers stand in for device memory: the library
 * must never dereference them, so their bytes stay as they were. Pinned host memory
 * (CUDA_HOST) is host memory and runs on the CPU. */
static void test_device_memory_without_cuda_backend(void) {
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8], gamma[2] = {3, 3}, beta[2] = {0, 0}, mm[2] = {7, 7}, mv[2] = {9, 9};
  float dy[8] = {1, -1, 2, -2, 3, -3, 4, -4}, mean[2] = {5, 5}, invstd[2] = {6, 6}, dx[8], dgamma[2], dbeta[2];
  float *buffers[] = {x, y, gamma, beta, mm, mv, dy, mean, invstd, dx, dgamma, dbeta};
  const int sizes[] = {8, 8, 2, 2, 2, 2, 8, 2, 2, 8, 2, 2};
  float before[12][8];
  const int64_t shape[2] = {4, 2}, cshape[1] = {2};
  const int32_t device_types[2] = {PYBN_DEVICE_CUDA, PYBN_DEVICE_CUDA_MANAGED};
  pybn_tensor tx = tensor(x, 32, 2, shape, NULL), ty = tensor(y, 32, 2, shape, NULL);
  pybn_tensor tg = tensor(gamma, 32, 1, cshape, NULL), tb = tensor(beta, 32, 1, cshape, NULL);
  pybn_tensor tmm = tensor(mm, 32, 1, cshape, NULL), tmv = tensor(mv, 32, 1, cshape, NULL);
  pybn_tensor tdy = tensor(dy, 32, 2, shape, NULL), tmean = tensor(mean, 32, 1, cshape, NULL);
  pybn_tensor tinv = tensor(invstd, 32, 1, cshape, NULL), tdx = tensor(dx, 32, 2, shape, NULL);
  pybn_tensor tdg = tensor(dgamma, 32, 1, cshape, NULL), tdb = tensor(dbeta, 32, 1, cshape, NULL);
  pybn_tensor *all[] = {&tx, &ty, &tg, &tb, &tmm, &tmv, &tdy, &tmean, &tinv, &tdx, &tdg, &tdb};
  pybn_backend backend = PYBN_BACKEND_AUTO;
  pybn_params p;
  int d, i, b;
  if (pybn_backend_built(PYBN_BACKEND_CUDA)) {
    printf("test_device_memory_without_cuda_backend: not run (the CUDA backend is built)\n");
    return;
  }
  EXPECT(!pybn_backend_available(PYBN_BACKEND_CUDA) && !pybn_backend_available(PYBN_BACKEND_CUDNN));
  for (i = 0; i < 8; ++i) y[i] = dx[i] = -1;
  dgamma[0] = dgamma[1] = dbeta[0] = dbeta[1] = -1;
  for (b = 0; b < 12; ++b) memcpy(before[b], buffers[b], (size_t)sizes[b] * sizeof(float));
  pybn_params_default(&p);
  p.output_mean_var = 1;

  for (d = 0; d < 2; ++d) {
    for (b = 0; b < 12; ++b) all[b]->device.device_type = device_types[d];
    EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &tmean, &tinv) == PYBN_ERROR_NOT_SUPPORTED);
    EXPECT(strstr(pybn_last_error(), "without a CUDA backend") != NULL);
    EXPECT(pybn_backward(&p, &tdy, &tx, &tg, &tmean, &tinv, &tdx, &tdg, &tdb) == PYBN_ERROR_NOT_SUPPORTED);
    EXPECT(pybn_select_backend(&p, &tx, &backend) == PYBN_ERROR_NOT_SUPPORTED);
    EXPECT(backend == PYBN_BACKEND_AUTO);
    /* Forcing the CPU backend on device memory is a bad request, not a missing backend. */
    p.backend = PYBN_BACKEND_CPU;
    EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &tmean, &tinv) == PYBN_ERROR_INVALID_VALUE);
    p.backend = PYBN_BACKEND_AUTO;
    /* gamma in host memory beside device data: the mismatch is named first. */
    tg.device.device_type = PYBN_DEVICE_CPU;
    EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &tmean, &tinv) == PYBN_ERROR_INVALID_VALUE);
    EXPECT(strstr(pybn_last_error(), "gamma") != NULL);
  }
  for (b = 0; b < 12; ++b) EXPECT(memcmp(before[b], buffers[b], (size_t)sizes[b] * sizeof(float)) == 0);

  /* Pinned host memory is host memory. */
  for (b = 0; b < 12; ++b) all[b]->device.device_type = PYBN_DEVICE_CUDA_HOST;
  EXPECT(pybn_select_backend(&p, &tx, &backend) == PYBN_SUCCESS && backend == PYBN_BACKEND_CPU);
  EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &tmean, &tinv) == PYBN_SUCCESS);
  EXPECT(mean[0] == 4 && mean[1] == 5); /* columns {1,3,5,7} and {2,4,6,8} */
  for (i = 0; i < 8; ++i) EXPECT(y[i] != -1);
}

/* Backward with dgamma requested only (dx and dbeta NULL under the null request). */
static void test_backward_null_requests(void) {
  float x[6] = {1, 2, 3, 4, 5, 6}, dy[6] = {1, -1, 2, 0, 1, 3}, gamma[1] = {2}, mean[1], invstd[1], dgamma[1];
  const int64_t shape[2] = {6, 1}, cshape[1] = {1};
  pybn_tensor tx = tensor(x, 32, 2, shape, NULL), tdy = tensor(dy, 32, 2, shape, NULL);
  pybn_tensor tg = tensor(gamma, 32, 1, cshape, NULL), tm = tensor(mean, 32, 1, cshape, NULL);
  pybn_tensor ti = tensor(invstd, 32, 1, cshape, NULL), tdg = tensor(dgamma, 32, 1, cshape, NULL);
  pybn_params p;
  double dot = 0;
  int i;
  mean[0] = 3.5f;
  invstd[0] = 0.5f;
  pybn_params_default(&p);
  p.fix_gamma = 0;
  p.grad_req_data = PYBN_GRAD_NULL;
  p.grad_req_beta = PYBN_GRAD_NULL;
  EXPECT(pybn_backward(&p, &tdy, &tx, &tg, &tm, &ti, NULL, &tdg, NULL) == PYBN_SUCCESS);
  for (i = 0; i < 6; ++i) dot += (x[i] - 3.5) * dy[i];
  EXPECT(fabs(dgamma[0] - dot * 0.5) < 1e-5);
  p.grad_req_beta = PYBN_GRAD_WRITE; /* now dbeta is required and NULL: an error */
  EXPECT(pybn_backward(&p, &tdy, &tx, &tg, &tm, &ti, NULL, &tdg, NULL) == PYBN_ERROR_INVALID_VALUE);
  EXPECT(strstr(pybn_last_error(), "dbeta") != NULL);
}

/* The calling thread's scratch buffer: empty after a release, grown to what a call needed by
 * the call after it (the first takes its scratch from the heap), at most 4 MB, and the
 * results the same whichever memory the scratch came from. */
static void test_scratch_buffer(void) {
  float x[64 * 40], y[3][64 * 40], gamma[40], beta[40], mm[40], mv[40];
  const int64_t shape[2] = {64, 40}, cshape[1] = {40};
  pybn_tensor tx, ty, tg, tb, tmm, tmv;
  pybn_params p;
  int i, k;
  for (i = 0; i < 64 * 40; ++i) x[i] = (float)(100.0 + cos(0.37 * i));
  for (i = 0; i < 40; ++i) {
    gamma[i] = 1.0f + 0.01f * (float)i;
    beta[i] = -0.5f;
  }
  pybn_params_default(&p);
  p.fix_gamma = 0;
  tx = tensor(x, 32, 2, shape, NULL);
  tg = tensor(gamma, 32, 1, cshape, NULL);
  tb = tensor(beta, 32, 1, cshape, NULL);
  tmm = tensor(mm, 32, 1, cshape, NULL);
  tmv = tensor(mv, 32, 1, cshape, NULL);
  pybn_cpu_release_scratch();
  EXPECT(pybn_cpu_scratch_bytes() == 0);
  for (k = 0; k < 3; ++k) {
    for (i = 0; i < 40; ++i) {
      mm[i] = 0.0f;
      mv[i] = 1.0f;
    }
    ty = tensor(y[k], 32, 2, shape, NULL);
    EXPECT(pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, NULL, NULL) == PYBN_SUCCESS);
    if (k == 1) EXPECT(pybn_cpu_scratch_bytes() > 0 && pybn_cpu_scratch_bytes() <= ((size_t)4 << 20));
    if (k == 1) pybn_cpu_release_scratch();
  }
  EXPECT(memcmp(y[0], y[1], sizeof y[0]) == 0 && memcmp(y[0], y[2], sizeof y[0]) == 0);
  for (k = 0; k < 40; ++k) { /* normalized: each channel's mean is beta */
    double s = 0;
    for (i = 0; i < 64; ++i) s += y[0][i * 40 + k];
    EXPECT(fabs(s / 64 - beta[k]) < 1e-4);
  }
  pybn_cpu_release_scratch();
  EXPECT(pybn_cpu_scratch_bytes() == 0);
}

/* Host memory: alignment, realloc keeping contents, and the cache of large blocks: a large
 * block given back is handed out again for the same size class (not for another), the idle
 * bytes are counted and capped by the limit, and release / a zero limit free them. */
static void test_host_memory(void) {
  const size_t big = PYBN_HOST_CACHE_MIN_BYTES + 12345, other = 3 * PYBN_HOST_CACHE_MIN_BYTES;
  const size_t old_limit = pybn_host_cache_limit();
  void *small = NULL, *grown = NULL, *a = NULL, *b = NULL, *c = NULL, *d = NULL;
  unsigned char *bytes;
  size_t i, idle;
  int ok = 1;

  EXPECT(pybn_host_alloc(100, NULL) == PYBN_ERROR_INVALID_VALUE && strlen(pybn_last_error()) > 0);
  EXPECT(pybn_host_alloc(0, &small) == PYBN_SUCCESS && small != NULL);
  pybn_host_free(small);
  pybn_host_free(NULL);

  EXPECT(pybn_host_alloc(1000, &small) == PYBN_SUCCESS && ((uintptr_t)small % 64) == 0);
  bytes = (unsigned char *)small;
  for (i = 0; i < 1000; ++i) bytes[i] = (unsigned char)(i * 7);
  /* grown past the cache's threshold, then shrunk back: the contents come along */
  EXPECT(pybn_host_realloc(small, big, &grown) == PYBN_SUCCESS && ((uintptr_t)grown % 4096) == 0);
  bytes = (unsigned char *)grown;
  for (i = 0; i < 1000; ++i) ok &= bytes[i] == (unsigned char)(i * 7);
  bytes[big - 1] = 42;
  EXPECT(pybn_host_realloc(grown, 500, &small) == PYBN_SUCCESS);
  bytes = (unsigned char *)small;
  for (i = 0; i < 500; ++i) ok &= bytes[i] == (unsigned char)(i * 7);
  EXPECT(ok);
  pybn_host_free(small);

  pybn_host_cache_set_limit((size_t)64 << 20);
  pybn_host_cache_release();
  EXPECT(pybn_host_cache_bytes() == 0);
  EXPECT(pybn_host_alloc(big, &a) == PYBN_SUCCESS && ((uintptr_t)a % 4096) == 0);
  memset(a, 1, big); /* every page really there */
  pybn_host_free(a);
  idle = pybn_host_cache_bytes();
  EXPECT(idle >= big && idle % ((size_t)2 << 20) == 0);
  /* a large block given back and still idle in the cache (the one double use pybn can see)
   * cannot be resized: an error that says so (not out of memory), the output pointer
   * cleared, the idle block untouched */
  d = a;
  EXPECT(pybn_host_realloc(a, 100, &d) == PYBN_ERROR_INVALID_VALUE && d == NULL &&
         strstr(pybn_last_error(), "given back") != NULL);
  EXPECT(pybn_host_cache_bytes() == idle);
  EXPECT(pybn_host_alloc(other, &c) == PYBN_SUCCESS && c != a); /* another size class */
  EXPECT(pybn_host_cache_bytes() == idle);
  EXPECT(pybn_host_alloc(big - 5000, &b) == PYBN_SUCCESS && b == a); /* same class: reused */
  EXPECT(pybn_host_cache_bytes() == 0);
  /* a realloc within the block's class keeps it in place */
  EXPECT(pybn_host_realloc(b, big + 1000, &d) == PYBN_SUCCESS && d == b);
  pybn_host_free(d);
  pybn_host_free(c);
  EXPECT(pybn_host_cache_bytes() > idle);
  /* a limit below what is idle frees the longest idle block (d's) first */
  pybn_host_cache_set_limit(pybn_host_cache_bytes() - 1);
  EXPECT(pybn_host_cache_bytes() > 0 && pybn_host_cache_bytes() < idle + other);
  EXPECT(pybn_host_alloc(other, &c) == PYBN_SUCCESS);
  EXPECT(pybn_host_cache_bytes() == 0);
  pybn_host_free(c);
  pybn_host_cache_release();
  EXPECT(pybn_host_cache_bytes() == 0);
  /* limit 0: nothing is kept */
  pybn_host_cache_set_limit(0);
  EXPECT(pybn_host_cache_limit() == 0);
  EXPECT(pybn_host_alloc(big, &a) == PYBN_SUCCESS);
  pybn_host_free(a);
  EXPECT(pybn_host_cache_bytes() == 0);
  pybn_host_cache_set_limit(old_limit);
}

int main(void) {
  test_versions();
  test_set_num_threads();
  test_host_memory();
  test_scratch_buffer();
  test_channels_last_float64();
  test_errors_leave_buffers();
  test_backward_null_requests();
  test_device_memory_without_cuda_backend();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("C ABI tests passed\n");
  return 0;
}
