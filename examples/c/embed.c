/* Embedding pybn in a C program: one training step of batch norm (forward, then backward)
 * on an NCHW float32 batch, using only <pybn/pybn.h> and libpybn.
 *
 *   cc -std=c99 embed.c -I"$(python -c 'import pybn; print(pybn.get_include())')" \
 *      "$(python -c 'import pybn; print(pybn.get_library())')" -lm -o embed && ./embed
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <pybn/pybn.h>

enum { N = 4, C = 3, H = 5, W = 6 };

static pybn_tensor describe(void *data, int ndim, const int64_t *shape) {
  pybn_tensor t;
  t.data = data;
  t.device.device_type = PYBN_DEVICE_CPU;
  t.device.device_id = 0;
  t.ndim = ndim;
  t.dtype.code = PYBN_DTYPE_FLOAT;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = NULL; /* C order */
  t.byte_offset = 0;
  return t;
}

static int check(pybn_status status, const char *what) {
  if (status == PYBN_SUCCESS) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, pybn_status_string(status), pybn_last_error());
  return 1;
}

int main(void) {
  static float x[N * C * H * W], y[N * C * H * W], dy[N * C * H * W], dx[N * C * H * W];
  float gamma[C] = {1.0f, 0.5f, 2.0f}, beta[C] = {0.0f, 1.0f, -1.0f};
  float moving_mean[C] = {0, 0, 0}, moving_var[C] = {1, 1, 1};
  float mean[C], invstd[C], dgamma[C], dbeta[C];
  const int64_t data_shape[4] = {N, C, H, W}, channel_shape[1] = {C};
  const int M = N * H * W;
  int i, c;

  if (pybn_abi_version() != PYBN_ABI_VERSION) {
    fprintf(stderr, "libpybn ABI %d does not match pybn.h's %d\n", pybn_abi_version(), PYBN_ABI_VERSION);
    return 1;
  }
  printf("pybn %s, CPU path %s, %d thread(s)\n", pybn_version_string(), pybn_cpu_isa(),
         pybn_cpu_num_threads());

  srand(7);
  for (i = 0; i < N * C * H * W; ++i) {
    c = (i / (H * W)) % C;
    x[i] = 10.0f * (float)c + (float)rand() / (float)RAND_MAX;
    dy[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  }

  {
    pybn_params params;
    pybn_tensor t_x = describe(x, 4, data_shape), t_y = describe(y, 4, data_shape);
    pybn_tensor t_dy = describe(dy, 4, data_shape), t_dx = describe(dx, 4, data_shape);
    pybn_tensor t_gamma = describe(gamma, 1, channel_shape), t_beta = describe(beta, 1, channel_shape);
    pybn_tensor t_mm = describe(moving_mean, 1, channel_shape), t_mv = describe(moving_var, 1, channel_shape);
    pybn_tensor t_mean = describe(mean, 1, channel_shape), t_invstd = describe(invstd, 1, channel_shape);
    pybn_tensor t_dgamma = describe(dgamma, 1, channel_shape), t_dbeta = describe(dbeta, 1, channel_shape);

    pybn_params_default(&params);
    params.fix_gamma = 0;
    params.output_mean_var = 1;
    if (check(pybn_forward(&params, &t_x, &t_gamma, &t_beta, &t_mm, &t_mv, &t_y, &t_mean, &t_invstd),
              "pybn_forward"))
      return 1;
    if (check(pybn_backward(&params, &t_dy, &t_x, &t_gamma, &t_mean, &t_invstd, &t_dx, &t_dgamma, &t_dbeta),
              "pybn_backward"))
      return 1;
  }

  /* Check: every channel of y has mean beta and standard deviation gamma * sqrt(var / (var + eps)),
   * and the data gradient has zero sum per channel. */
  for (c = 0; c < C; ++c) {
    double sum_y = 0, sum_y2 = 0, sum_dx = 0, var;
    int n, k;
    for (n = 0; n < N; ++n)
      for (k = 0; k < H * W; ++k) {
        const int idx = (n * C + c) * H * W + k;
        sum_y += y[idx];
        sum_y2 += (double)y[idx] * y[idx];
        sum_dx += dx[idx];
      }
    var = 1.0 / ((double)invstd[c] * invstd[c]) - 1e-3;
    printf("channel %d: mean %.4f invstd %.4f | y mean %.4f (beta %.1f) | sum dx %.1e | dgamma %.4f dbeta %.4f"
           " | moving_mean %.4f\n", c, mean[c], invstd[c], sum_y / M, beta[c], sum_dx, dgamma[c], dbeta[c],
           moving_mean[c]);
    if (fabs(sum_y / M - beta[c]) > 1e-4 ||
        fabs(sqrt(sum_y2 / M - (sum_y / M) * (sum_y / M)) - gamma[c] * sqrt(var * invstd[c] * invstd[c])) > 1e-3 ||
        fabs(sum_dx) > 1e-3 || fabs(moving_mean[c] - 0.1 * mean[c]) > 1e-5) {
      fprintf(stderr, "channel %d: results are off\n", c);
      return 1;
    }
  }
  printf("ok\n");
  return 0;
}
