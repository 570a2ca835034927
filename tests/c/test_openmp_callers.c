/* pybn called from inside the caller's own OpenMP parallel region, each thread normalizing
 * its own tensors: a framework running several small batch norms at once. pybn's worksharing
 * loops must bind to pybn's own team, never to the caller's (a loop shared out among the
 * caller's threads would leave parts of each call undone). Small tensors, which pybn runs on
 * one thread, in four layouts: 2-D, 7x7 maps, long runs, channel-last; and one of 6.5 MB whose
 * 800 KB channels pybn's own team of two would share between its threads (shared_channels in
 * kernels.inc), and one of 7x7 maps in 52 channel blocks that such a team would split between
 * its threads (Forward::row_layout), each of which inside the caller's region gets a team of
 * one. Each thread's results are checked against sums computed here in double, training
 * forward and backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#include <pybn/pybn.h>

#include "test_tensor.h"

#define CALLERS 4
#define MAX_CHANNELS 600

typedef struct {
  const char *name;
  int ndim, axis;
  int64_t shape[4];
} Case;

static const Case cases[] = {
    {"2-D", 2, 1, {20, 300, 1, 1}},
    {"7x7 maps", 4, 1, {3, 40, 7, 7}},
    {"long runs", 3, 1, {2, 5, 600, 1}},
    {"channel-last", 3, 2, {6, 50, 7, 1}},
    {"shared channels", 3, 1, {2, 8, 51200, 1}},
    {"7x7 maps in owned blocks", 4, 1, {16, 512, 7, 7}},
};

/* (outer, C, inner) of a C-contiguous shape around `axis`. */
static void view(const Case *k, int64_t *outer, int64_t *channels, int64_t *inner) {
  int d;
  *outer = 1;
  *inner = 1;
  for (d = 0; d < k->axis; ++d) *outer *= k->shape[d];
  *channels = k->shape[k->axis];
  for (d = k->axis + 1; d < k->ndim; ++d) *inner *= k->shape[d];
}

/* One thread's work: forward (training) and backward of case k on data from `seed`. Returns
 * the number of values off the double-precision reference (0: all correct). */
static int run_case(const Case *k, unsigned seed) {
  static const double eps = 1e-3;
  double gamma[MAX_CHANNELS], beta[MAX_CHANNELS], mm[MAX_CHANNELS], mv[MAX_CHANNELS];
  double mean[MAX_CHANNELS], invstd[MAX_CHANNELS], dgamma[MAX_CHANNELS], dbeta[MAX_CHANNELS];
  int64_t outer, C, inner, n, c, i, size;
  int64_t channel_shape[1];
  pybn_tensor tx, ty, tdy, tdx, tg, tb, tmm, tmv, tmean, tinv, tdg, tdb;
  pybn_params p;
  int bad = 0;
  double *x, *y, *dy, *dx;
  view(k, &outer, &C, &inner);
  size = outer * C * inner;
  x = malloc(sizeof(double) * (size_t)size);
  y = malloc(sizeof(double) * (size_t)size);
  dy = malloc(sizeof(double) * (size_t)size);
  dx = malloc(sizeof(double) * (size_t)size);
  if (x == NULL || y == NULL || dy == NULL || dx == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  channel_shape[0] = C;
  for (i = 0; i < size; ++i) {
    seed = seed * 1103515245u + 12345u;
    x[i] = 100.0 + (double)((seed >> 8) % 20001) / 1000.0 - 10.0;
    dy[i] = sin((double)i + seed % 7);
    y[i] = dx[i] = NAN; /* poisoned: every element must be written */
  }
  for (c = 0; c < C; ++c) {
    gamma[c] = 1.0 + 0.01 * (double)c;
    beta[c] = -0.5 + 0.001 * (double)c;
    mm[c] = 0.0;
    mv[c] = 1.0;
    mean[c] = invstd[c] = dgamma[c] = dbeta[c] = NAN;
  }
  tx = tensor(x, 64, k->ndim, k->shape, NULL);
  ty = tensor(y, 64, k->ndim, k->shape, NULL);
  tdy = tensor(dy, 64, k->ndim, k->shape, NULL);
  tdx = tensor(dx, 64, k->ndim, k->shape, NULL);
  tg = tensor(gamma, 64, 1, channel_shape, NULL);
  tb = tensor(beta, 64, 1, channel_shape, NULL);
  tmm = tensor(mm, 64, 1, channel_shape, NULL);
  tmv = tensor(mv, 64, 1, channel_shape, NULL);
  tmean = tensor(mean, 64, 1, channel_shape, NULL);
  tinv = tensor(invstd, 64, 1, channel_shape, NULL);
  tdg = tensor(dgamma, 64, 1, channel_shape, NULL);
  tdb = tensor(dbeta, 64, 1, channel_shape, NULL);
  pybn_params_default(&p);
  p.fix_gamma = 0;
  p.eps = eps;
  p.axis = k->axis;
  p.output_mean_var = 1;
  if (pybn_forward(&p, &tx, &tg, &tb, &tmm, &tmv, &ty, &tmean, &tinv) != PYBN_SUCCESS) ++bad;
  if (pybn_backward(&p, &tdy, &tx, &tg, &tmean, &tinv, &tdx, &tdg, &tdb) != PYBN_SUCCESS) ++bad;
  for (c = 0; c < C; ++c) {
    const double M = (double)(outer * inner);
    double s = 0, ss = 0, sdy = 0, dot = 0, m, v, is;
    for (n = 0; n < outer; ++n)
      for (i = 0; i < inner; ++i) s += x[(n * C + c) * inner + i];
    m = s / M;
    for (n = 0; n < outer; ++n)
      for (i = 0; i < inner; ++i) {
        const int64_t at = (n * C + c) * inner + i;
        ss += (x[at] - m) * (x[at] - m);
        sdy += dy[at];
        dot += (x[at] - m) * dy[at];
      }
    v = ss / M;
    is = 1.0 / sqrt(v + eps);
    bad += !(fabs(mean[c] - m) <= 1e-9 * fabs(m));
    bad += !(fabs(invstd[c] - is) <= 1e-9 * is);
    bad += !(fabs(dbeta[c] - sdy) <= 1e-9 * (1.0 + fabs(sdy)));
    bad += !(fabs(dgamma[c] - dot * is) <= 1e-9 * (1.0 + fabs(dot * is)));
    for (n = 0; n < outer; ++n)
      for (i = 0; i < inner; ++i) {
        const int64_t at = (n * C + c) * inner + i;
        const double want_y = (x[at] - m) * is * gamma[c] + beta[c];
        const double want_dx = (dy[at] - sdy / M - (x[at] - m) * is * is * dot / M) * is * gamma[c];
        bad += !(fabs(y[at] - want_y) <= 1e-9 * (1.0 + fabs(want_y)));
        bad += !(fabs(dx[at] - want_dx) <= 1e-9 * (1.0 + fabs(want_dx)));
      }
  }
  free(x);
  free(y);
  free(dy);
  free(dx);
  return bad;
}

int main(void) {
  int failures = 0;
  size_t k;
  for (k = 0; k < sizeof cases / sizeof cases[0]; ++k) {
    int bad[CALLERS], t, rounds;
    memset(bad, 0, sizeof bad);
    const int64_t elements = cases[k].shape[0] * cases[k].shape[1] * cases[k].shape[2] * cases[k].shape[3];
    for (rounds = 0; rounds < (elements > 100000 ? 3 : 20); ++rounds) {
#pragma omp parallel num_threads(CALLERS)
      {
        const int me = omp_get_thread_num();
        bad[me] += run_case(&cases[k], 1000u * (unsigned)rounds + (unsigned)me);
      }
    }
    for (t = 0; t < CALLERS; ++t)
      if (bad[t] != 0) {
        fprintf(stderr, "%s: caller thread %d: %d values off the reference\n", cases[k].name, t, bad[t]);
        ++failures;
      }
  }
  if (failures == 0) printf("all OpenMP callers correct\n");
  return failures == 0 ? 0 : 1;
}
