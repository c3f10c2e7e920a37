// Switchable Normalization forward and backward on the CPU in two passes each (norms/kernels/cpu.py).
//
// The per-(n, c) passes (nc_passes.h) read float32 or bfloat16 activations in NCHW or channels_last
// order and accumulate shifted sums in float vector lanes, each over at most 16 values, merged in
// double; the small (N, C) arithmetic (IN/LN/BN mixing and its closed-form derivative) runs in
// double. Compiled on first use with the host's C++ compiler (cpu_build.py) and loaded with ctypes,
// so it needs no PyTorch headers; OpenMP comes from the libgomp PyTorch loaded.
//
// Workspace (double, filled by sn_forward, read by sn_backward), for k statistics groups:
//   a[3], b[3] softmax mean/var weights | mean_in[NC] | var_b[NC] biased | mu[NC] mixed mean |
//   rstd[NC] | ln_mean[N] | ln_var[N] | bn_mean[kC] | bn_var[kC]  (eval: k = 1, the running buffers)
#include "nc_passes.h"

namespace {

struct Ws {
  double *a, *b, *mean_in, *var_b, *mu, *rstd, *ln_mean, *ln_var, *bn_mean, *bn_var;
  Ws(double* w, long N, long C, long k) {
    long nc = N * C;
    a = w; b = w + 3; mean_in = w + 6; var_b = mean_in + nc; mu = var_b + nc; rstd = mu + nc;
    ln_mean = rstd + nc; ln_var = ln_mean + N; bn_mean = ln_var + N; bn_var = bn_mean + k * C;
  }
};

void softmax(const float* logits, int nb, double* out) {
  double top = logits[0], total = 0;
  for (int i = 1; i < nb; ++i) top = std::max(top, double(logits[i]));
  for (int i = 0; i < nb; ++i) total += out[i] = std::exp(double(logits[i]) - top);
  for (int i = 0; i < nb; ++i) out[i] /= total;
  for (int i = nb; i < 3; ++i) out[i] = 0;
}

double unbias(long HW) { return HW > 1 ? double(HW) / double(HW - 1) : 1.0; }

// The SN statistics of the module doc of norms/switchable.py, from the moments in the workspace.
void mix(const Ws& w, long N, long C, long HW, long k, int nb, const float* run_mean, const float* run_var,
         const float* mean_logits, const float* var_logits, double eps) {
  softmax(mean_logits, nb, w.a);
  softmax(var_logits, nb, w.b);
  double f = unbias(HW);
  for (long n = 0; n < N; ++n) {
    const double *m = w.mean_in + n * C, *v = w.var_b + n * C;
    double sm = 0, sv = 0, sd = 0;
#pragma omp simd reduction(+ : sm, sv)
    for (long c = 0; c < C; ++c) sm += m[c], sv += v[c];
    double lm = sm / C;
#pragma omp simd reduction(+ : sd)
    for (long c = 0; c < C; ++c) sd += (m[c] - lm) * (m[c] - lm);
    w.ln_mean[n] = lm;
    w.ln_var[n] = f * sv / C + sd / C;
  }
  long per = N / k;
  if (nb != 3) {  // no BN branch: zeros keep the backward's loops free of branches
    std::fill(w.bn_mean, w.bn_mean + k * C, 0.0);
    std::fill(w.bn_var, w.bn_var + k * C, 0.0);
  } else if (run_mean) {
    for (long c = 0; c < C; ++c) w.bn_mean[c] = run_mean[c], w.bn_var[c] = run_var[c];
  } else {
    for (long g = 0; g < k; ++g) {
      double *bm = w.bn_mean + g * C, *bv = w.bn_var + g * C;
      for (long c = 0; c < C; ++c) bm[c] = bv[c] = 0;
      for (long n = g * per; n < (g + 1) * per; ++n)
        for (long c = 0; c < C; ++c) bm[c] += w.mean_in[n * C + c], bv[c] += w.var_b[n * C + c];
      for (long c = 0; c < C; ++c) bm[c] /= per, bv[c] = f * bv[c] / per;
      for (long n = g * per; n < (g + 1) * per; ++n)
        for (long c = 0; c < C; ++c) {
          double d = w.mean_in[n * C + c] - bm[c];
          bv[c] += d * d / per;
        }
    }
  }
  double a0 = w.a[0], a1 = w.a[1], a2 = w.a[2], b0 = w.b[0] * f, b1 = w.b[1], b2 = w.b[2];
  for (long n = 0; n < N; ++n) {
    long g = run_mean ? 0 : n / per;
    const double *mi = w.mean_in + n * C, *vb = w.var_b + n * C, *bm = w.bn_mean + g * C, *bv = w.bn_var + g * C;
    double *mu = w.mu + n * C, *rstd = w.rstd + n * C, lm = w.ln_mean[n], lv = w.ln_var[n];
    if (nb == 3) {
#pragma omp simd
      for (long c = 0; c < C; ++c) {
        mu[c] = a0 * mi[c] + a1 * lm + a2 * bm[c];
        rstd[c] = 1.0 / std::sqrt(b0 * vb[c] + b1 * lv + b2 * bv[c] + eps);
      }
    } else {
#pragma omp simd
      for (long c = 0; c < C; ++c) {
        mu[c] = a0 * mi[c] + a1 * lm;
        rstd[c] = 1.0 / std::sqrt(b0 * vb[c] + b1 * lv + eps);
      }
    }
  }
}

template <class T>
void forward(const T* x, T* y, int cl, long N, long C, long HW, const float* weight, const float* bias,
             const float* mean_logits, const float* var_logits, int nb, const float* run_mean,
             const float* run_var, long k, double eps, double* workspace, int threads) {
  Ws w(workspace, N, C, k);
  moments(x, cl, N, C, HW, w.mean_in, w.var_b, threads);
  mix(w, N, C, HW, k, nb, run_mean, run_var, mean_logits, var_logits, eps);
  float *m = scratch<float>(3 * N * C, 0), *s = m + N * C, *t = s + N * C;
  for (long n = 0; n < N; ++n) {  // centered on mean_in: y = (x - mean_in) * s + bias + (mean_in - mu) * s
#pragma omp simd
    for (long c = 0; c < C; ++c) {
      long i = n * C + c;
      double scale = weight[c] * w.rstd[i];
      m[i] = float(w.mean_in[i]);
      s[i] = float(scale);
      t[i] = float(bias[c] + (w.mean_in[i] - w.mu[i]) * scale);
    }
  }
  elementwise(x, (const T*)nullptr, y, cl, N, C, HW, m, s, nullptr, t, threads);
}

// Closed-form derivative of the mixing: dL/d(mean_in) and dL/d(var_b) per (n, c), and the
// parameter gradients; the BN branch passes gradient to mean_in/var_b only when it used the batch.
template <class T>
void backward(const T* x, const T* dy, T* dx, int cl, long N, long C, long HW, const float* weight, int nb,
              int eval, long k, const double* workspace, float* d_weight, float* d_bias, float* d_mean_logits,
              float* d_var_logits, int threads) {
  Ws w(const_cast<double*>(workspace), N, C, k);
  long nc = N * C, per = N / k;
  double* s1 = scratch<double>(4 * nc + 2 * N + 4 * k * C + 2 * C, 0);
  double *s2 = s1 + nc, *dmu = s2 + nc, *dv = dmu + nc, *row_mu = dv + nc, *row_v = row_mu + N;
  double *col_mu = row_v + N, *col_v = col_mu + k * C, *dw = col_v + k * C, *db = dw + C;
  std::fill(col_mu, db + C, 0.0);
  grad_sums(x, dy, cl, N, C, HW, w.mean_in, s1, s2, threads);
  double f = unbias(HW), da0 = 0, da1 = 0, da2 = 0, dv0 = 0, dv1 = 0, dv2 = 0;
  for (long n = 0; n < N; ++n) {
    long g = eval ? 0 : n / per;
    const double *mi = w.mean_in + n * C, *vb = w.var_b + n * C, *mu = w.mu + n * C, *rs = w.rstd + n * C;
    const double *a1 = s1 + n * C, *a2 = s2 + n * C, *bm = w.bn_mean + g * C, *bv = w.bn_var + g * C;
    double *gm = dmu + n * C, *gv = dv + n * C, *cm = col_mu + g * C, *cv = col_v + g * C;
    double rm = 0, rv = 0, lm = w.ln_mean[n], lv = w.ln_var[n];
#pragma omp simd reduction(+ : da0, da1, da2, dv0, dv1, dv2, rm, rv)
    for (long c = 0; c < C; ++c) {
      double r = rs[c], scale = weight[c] * r;
      double d_scale = a2[c] + (mi[c] - mu[c]) * a1[c];
      gm[c] = -scale * a1[c];
      gv[c] = -0.5 * d_scale * weight[c] * r * r * r;
      db[c] += a1[c];
      dw[c] += d_scale * r;
      da0 += gm[c] * mi[c], da1 += gm[c] * lm;
      dv0 += gv[c] * f * vb[c], dv1 += gv[c] * lv;
      da2 += gm[c] * bm[c], dv2 += gv[c] * bv[c];  // bm, bv are 0 without the BN branch
      rm += gm[c], rv += gv[c];
      cm[c] += gm[c], cv[c] += gv[c];
    }
    row_mu[n] = rm, row_v[n] = rv;
  }
  double da[3] = {da0, da1, da2}, dvw[3] = {dv0, dv1, dv2}, inv_c = 1.0 / C, inv_per = 1.0 / per,
         inv_hw = 1.0 / HW;
  double wa0 = w.a[0], wa1 = w.a[1], wa2 = w.a[2], wb0 = w.b[0], wb1 = w.b[1], wb2 = w.b[2];
  bool batch_bn = nb == 3 && !eval;  // only then the BN statistics depend on mean_in and var_b
  double cm_w = batch_bn ? wa2 * inv_per : 0.0, cv_w = batch_bn ? wb2 * inv_per : 0.0;
  float *m = scratch<float>(4 * nc, 1), *s = m + nc, *k1 = s + nc, *k0 = k1 + nc;
  for (long n = 0; n < N; ++n) {
    long g = n / per;
    const double *mi = w.mean_in + n * C, *rs = w.rstd + n * C, *gm = dmu + n * C, *gv = dv + n * C;
    const double *bm = w.bn_mean + g * C, *cm = col_mu + g * C, *cv = col_v + g * C;
    double lm = w.ln_mean[n], row_m = wa1 * row_mu[n] * inv_c, row_v2 = wb1 * row_v[n] * 2.0 * inv_c,
           row_vv = wb1 * row_v[n] * inv_c;
    float *mo = m + n * C, *so = s + n * C, *k1o = k1 + n * C, *k0o = k0 + n * C;
#pragma omp simd
    for (long c = 0; c < C; ++c) {
      double g_mean = wa0 * gm[c] + row_m + row_v2 * (mi[c] - lm) + cm_w * cm[c] + 2.0 * cv_w * cv[c] * (mi[c] - bm[c]);
      double g_var = wb0 * gv[c] + row_vv + cv_w * cv[c];
      // dx = scale * dy + (2 f g_var / HW) * (x - mean_in) + g_mean / HW
      mo[c] = float(mi[c]);
      so[c] = float(weight[c] * rs[c]);
      k1o[c] = float(2.0 * f * g_var * inv_hw);
      k0o[c] = float(g_mean * inv_hw);
    }
  }
  elementwise(x, dy, dx, cl, N, C, HW, m, s, k1, k0, threads);
  for (long c = 0; c < C; ++c) d_weight[c] = float(dw[c]), d_bias[c] = float(db[c]);
  double sa = 0, sb = 0;
  for (int j = 0; j < nb; ++j) sa += w.a[j] * da[j], sb += w.b[j] * dvw[j];
  for (int j = 0; j < nb; ++j) {  // softmax Jacobian
    d_mean_logits[j] = float(w.a[j] * (da[j] - sa));
    d_var_logits[j] = float(w.b[j] * (dvw[j] - sb));
  }
}

}  // namespace

extern "C" {

void sn_forward(const void* x, void* y, int is_bf16, int cl, long N, long C, long HW, const float* weight,
                const float* bias, const float* mean_logits, const float* var_logits, int nb,
                const float* run_mean, const float* run_var, long k, double eps, double* workspace, int threads) {
  if (is_bf16)
    forward((const bf16*)x, (bf16*)y, cl, N, C, HW, weight, bias, mean_logits, var_logits, nb, run_mean,
            run_var, k, eps, workspace, threads);
  else
    forward((const float*)x, (float*)y, cl, N, C, HW, weight, bias, mean_logits, var_logits, nb, run_mean,
            run_var, k, eps, workspace, threads);
}

void sn_backward(const void* x, const void* dy, void* dx, int is_bf16, int cl, long N, long C, long HW,
                 const float* weight, int nb, int eval, long k, const double* workspace, float* d_weight,
                 float* d_bias, float* d_mean_logits, float* d_var_logits, int threads) {
  if (is_bf16)
    backward((const bf16*)x, (const bf16*)dy, (bf16*)dx, cl, N, C, HW, weight, nb, eval, k, workspace, d_weight,
             d_bias, d_mean_logits, d_var_logits, threads);
  else
    backward((const float*)x, (const float*)dy, (float*)dx, cl, N, C, HW, weight, nb, eval, k, workspace,
             d_weight, d_bias, d_mean_logits, d_var_logits, threads);
}
}
