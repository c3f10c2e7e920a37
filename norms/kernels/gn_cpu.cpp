// GroupNorm (and IN, LN as G = C, G = 1) forward and backward on the CPU in two passes each
// (norms/kernels/cpu.py). Group statistics are merged exactly, in double, from the per-(n, c)
// moments: mean of the channel means, and mean of the channel variances plus the variance of the
// channel means (equal counts). Biased variance, as nn.GroupNorm.
//
// Workspace (double, filled by gn_forward, read by gn_backward):
//   mean_in[NC] | var_b[NC] | group mean[NG] | group rstd[NG]
#include "nc_passes.h"

namespace {

template <class T>
void forward(const T* x, T* y, int cl, long N, long C, long HW, long G, const float* weight, const float* bias,
             double eps, double* ws, int threads) {
  long nc = N * C, per = C / G;
  double *mean_in = ws, *var_b = ws + nc, *gmean = var_b + nc, *grstd = gmean + N * G, inv = 1.0 / per;
  moments(x, cl, N, C, HW, mean_in, var_b, threads);
  float *m = scratch<float>(3 * nc, 0), *s = m + nc, *t = s + nc;
  for (long q = 0; q < N * G; ++q) {
    const double *mi = mean_in + q * per, *vb = var_b + q * per;
    double sm = 0, sv = 0, sd = 0;
    for (long c = 0; c < per; ++c) sm += mi[c], sv += vb[c];
    double gm = sm * inv;
    for (long c = 0; c < per; ++c) sd += (mi[c] - gm) * (mi[c] - gm);
    double r = 1.0 / std::sqrt(sv * inv + sd * inv + eps);
    gmean[q] = gm, grstd[q] = r;
    for (long c = 0; c < per; ++c) {  // centered on mean_in: y = (x - mean_in) * s + bias + (mean_in - gm) * s
      long i = q * per + c, ch = i % C;
      double scale = (weight ? weight[ch] : 1.0) * r;
      m[i] = float(mi[c]);
      s[i] = float(scale);
      t[i] = float((bias ? bias[ch] : 0.0) + (mi[c] - gm) * scale);
    }
  }
  elementwise(x, (const T*)nullptr, y, cl, N, C, HW, m, s, nullptr, t, threads);
}

// dx = rstd * (w dy - A / M - xhat * B / M) per group of M = per * HW values, with A = sum w dy and
// B = sum w dy xhat, xhat = (x - group mean) * rstd; written as s * dy + k1 * (x - mean_in) + k0.
template <class T>
void backward(const T* x, const T* dy, T* dx, int cl, long N, long C, long HW, long G, const float* weight,
              const double* ws, float* d_weight, float* d_bias, int threads) {
  long nc = N * C, per = C / G;
  const double *mean_in = ws, *gmean = ws + 2 * nc, *grstd = gmean + N * G;
  double* s1 = scratch<double>(2 * nc + 2 * C, 0);
  double *s2 = s1 + nc, *dw = s2 + nc, *db = dw + C, inv_m = 1.0 / (double(per) * HW);
  std::fill(dw, db + C, 0.0);
  grad_sums(x, dy, cl, N, C, HW, mean_in, s1, s2, threads);
  float *m = scratch<float>(4 * nc, 1), *s = m + nc, *k1 = s + nc, *k0 = k1 + nc;
  for (long q = 0; q < N * G; ++q) {
    double gm = gmean[q], r = grstd[q], a = 0, b = 0;
    for (long c = 0; c < per; ++c) {
      long i = q * per + c, ch = i % C;
      double w = weight ? weight[ch] : 1.0, dot = (s2[i] + (mean_in[i] - gm) * s1[i]) * r;  // sum dy * xhat
      a += w * s1[i], b += w * dot;
      db[ch] += s1[i], dw[ch] += dot;
    }
    double c1 = -r * r * b * inv_m, c0 = -r * a * inv_m;
    for (long c = 0; c < per; ++c) {
      long i = q * per + c, ch = i % C;
      m[i] = float(mean_in[i]);
      s[i] = float((weight ? weight[ch] : 1.0) * r);
      k1[i] = float(c1);
      k0[i] = float(c0 + c1 * (mean_in[i] - gm));
    }
  }
  elementwise(x, dy, dx, cl, N, C, HW, m, s, k1, k0, threads);
  if (d_weight)
    for (long c = 0; c < C; ++c) d_weight[c] = float(dw[c]), d_bias[c] = float(db[c]);
}

}  // namespace

extern "C" {

void gn_forward(const void* x, void* y, int is_bf16, int cl, long N, long C, long HW, long G, const float* weight,
                const float* bias, double eps, double* workspace, int threads) {
  if (is_bf16)
    forward((const bf16*)x, (bf16*)y, cl, N, C, HW, G, weight, bias, eps, workspace, threads);
  else
    forward((const float*)x, (float*)y, cl, N, C, HW, G, weight, bias, eps, workspace, threads);
}

void gn_backward(const void* x, const void* dy, void* dx, int is_bf16, int cl, long N, long C, long HW, long G,
                 const float* weight, const double* workspace, float* d_weight, float* d_bias, int threads) {
  if (is_bf16)
    backward((const bf16*)x, (const bf16*)dy, (bf16*)dx, cl, N, C, HW, G, weight, workspace, d_weight, d_bias,
             threads);
  else
    backward((const float*)x, (const float*)dy, (float*)dx, cl, N, C, HW, G, weight, workspace, d_weight,
             d_bias, threads);
}
}
