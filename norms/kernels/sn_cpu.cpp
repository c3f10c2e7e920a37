// Switchable Normalization forward and backward on the CPU in two passes each (norms/kernels/cpu.py).
//
// The per-(n, c) passes read float32 or bfloat16 activations in NCHW or channels_last order and
// accumulate in double; the small (N, C) arithmetic (IN/LN/BN mixing and its closed-form
// derivative) runs in double. Compiled on first use with the host's C++ compiler and loaded
// with ctypes, so it needs no PyTorch headers; OpenMP comes from the libgomp PyTorch loaded.
//
// Workspace (double, filled by sn_forward, read by sn_backward), for k statistics groups:
//   a[3], b[3] softmax mean/var weights | mean_in[NC] | var_b[NC] biased | mu[NC] mixed mean |
//   rstd[NC] | ln_mean[N] | ln_var[N] | bn_mean[kC] | bn_var[kC]  (eval: k = 1, the running buffers)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

typedef uint16_t bf16;

inline float load(const float* p, long i) { return p[i]; }
inline float load(const bf16* p, long i) {
  uint32_t bits = uint32_t(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void store(float* p, long i, float f) { p[i] = f; }
inline void store(bf16* p, long i, float f) {  // round to nearest even, as c10::BFloat16
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    p[i] = bf16((bits >> 16) | 0x40u);  // NaN stays a (quiet) NaN
    return;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  p[i] = bf16(bits >> 16);
}

const long kBlock = 64;     // channels per task in channels_last passes
const long kSerial = 1 << 15;  // elements below which a pass runs on one thread

// Per-call temporaries from a per-thread buffer that only grows: fresh large allocations would be
// mmap'd and page-faulted on every call, which costs as much as a pass over a small activation.
template <class T>
T* scratch(long count, int slot) {
  thread_local std::vector<double> buffers[2];
  std::vector<double>& b = buffers[slot];
  long words = (count * long(sizeof(T)) + 7) / 8;
  if (long(b.size()) < words) b.resize(words);
  return reinterpret_cast<T*>(b.data());
}

struct Ws {
  double *a, *b, *mean_in, *var_b, *mu, *rstd, *ln_mean, *ln_var, *bn_mean, *bn_var;
  Ws(double* w, long N, long C, long k) {
    long nc = N * C;
    a = w; b = w + 3; mean_in = w + 6; var_b = mean_in + nc; mu = var_b + nc; rstd = mu + nc;
    ln_mean = rstd + nc; ln_var = ln_mean + N; bn_mean = ln_var + N; bn_var = bn_mean + k * C;
  }
};

// Per-(n, c) mean and biased variance: sums shifted by the plane's first value, in double.
template <class T>
void moments(const T* x, int cl, long N, long C, long HW, double* mean, double* var, int threads) {
  int nt = N * C * HW < kSerial ? 1 : threads;
  if (!cl) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long i = 0; i < N * C; ++i) {
      const T* p = x + i * HW;
      double shift = load(p, 0), s1 = 0, s2 = 0;
      for (long j = 0; j < HW; ++j) {
        double d = double(load(p, j)) - shift;
        s1 += d;
        s2 += d * d;
      }
      double m = s1 / HW;
      mean[i] = shift + m;
      var[i] = std::max(s2 / HW - m * m, 0.0);
    }
    return;
  }
  long blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (long t = 0; t < N * blocks; ++t) {
    long n = t / blocks, c0 = (t % blocks) * kBlock, cw = std::min(kBlock, C - c0);
    const T* base = x + n * HW * C + c0;
    double shift[kBlock], s1[kBlock] = {0}, s2[kBlock] = {0};
    for (long c = 0; c < cw; ++c) shift[c] = load(base, c);
    for (long j = 0; j < HW; ++j) {
      const T* row = base + j * C;
#pragma omp simd
      for (long c = 0; c < cw; ++c) {
        double d = double(load(row, c)) - shift[c];
        s1[c] += d;
        s2[c] += d * d;
      }
    }
    for (long c = 0; c < cw; ++c) {
      double m = s1[c] / HW;
      mean[n * C + c0 + c] = shift[c] + m;
      var[n * C + c0 + c] = std::max(s2[c] / HW - m * m, 0.0);
    }
  }
}

// out = (x - m) * s + t, or with dy: out = s * dy + (x - m) * k1 + t, per-(n, c) float coefficients.
template <class T>
void elementwise(const T* x, const T* dy, T* out, int cl, long N, long C, long HW, const float* m,
                 const float* s, const float* k1, const float* t, int threads) {
  int nt = N * C * HW < kSerial ? 1 : threads;
  if (!cl) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long i = 0; i < N * C; ++i) {
      const T* p = x + i * HW;
      T* o = out + i * HW;
      float mi = m[i], si = s[i], ti = t[i];
      if (dy) {
        const T* g = dy + i * HW;
        float ki = k1[i];
#pragma omp simd
        for (long j = 0; j < HW; ++j) store(o, j, si * load(g, j) + (load(p, j) - mi) * ki + ti);
      } else {
#pragma omp simd
        for (long j = 0; j < HW; ++j) store(o, j, (load(p, j) - mi) * si + ti);
      }
    }
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (long r = 0; r < N * HW; ++r) {
    long n = r / HW;
    const T* p = x + r * C;
    T* o = out + r * C;
    const float *mn = m + n * C, *sn = s + n * C, *tn = t + n * C;
    if (dy) {
      const T* g = dy + r * C;
      const float* kn = k1 + n * C;
#pragma omp simd
      for (long c = 0; c < C; ++c) store(o, c, sn[c] * load(g, c) + (load(p, c) - mn[c]) * kn[c] + tn[c]);
    } else {
#pragma omp simd
      for (long c = 0; c < C; ++c) store(o, c, (load(p, c) - mn[c]) * sn[c] + tn[c]);
    }
  }
}

// Per-(n, c) sums of dy and dy * (x - mean_in), in double.
template <class T>
void grad_sums(const T* x, const T* dy, int cl, long N, long C, long HW, const double* mean, double* s1,
               double* s2, int threads) {
  int nt = N * C * HW < kSerial ? 1 : threads;
  if (!cl) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long i = 0; i < N * C; ++i) {
      const T *p = x + i * HW, *g = dy + i * HW;
      double mi = mean[i], a = 0, b = 0;
      for (long j = 0; j < HW; ++j) {
        double gj = load(g, j);
        a += gj;
        b += gj * (double(load(p, j)) - mi);
      }
      s1[i] = a;
      s2[i] = b;
    }
    return;
  }
  long blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (long t = 0; t < N * blocks; ++t) {
    long n = t / blocks, c0 = (t % blocks) * kBlock, cw = std::min(kBlock, C - c0);
    const double* mi = mean + n * C + c0;
    double a[kBlock] = {0}, b[kBlock] = {0};
    for (long j = 0; j < HW; ++j) {
      long off = (n * HW + j) * C + c0;
#pragma omp simd
      for (long c = 0; c < cw; ++c) {
        double gj = load(dy + off, c);
        a[c] += gj;
        b[c] += gj * (double(load(x + off, c)) - mi[c]);
      }
    }
    for (long c = 0; c < cw; ++c) {
      s1[n * C + c0 + c] = a[c];
      s2[n * C + c0 + c] = b[c];
    }
  }
}

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
  if (nb == 3 && run_mean) {
    for (long c = 0; c < C; ++c) w.bn_mean[c] = run_mean[c], w.bn_var[c] = run_var[c];
  } else if (nb == 3) {
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
             const float* run_var, long k, double eps, float* ema_mean, float* ema_var, double momentum,
             double* workspace, int threads) {
  Ws w(workspace, N, C, k);
  moments(x, cl, N, C, HW, w.mean_in, w.var_b, threads);
  mix(w, N, C, HW, k, nb, run_mean, run_var, mean_logits, var_logits, eps);
  if (ema_mean && nb == 3 && !run_mean) {  // running += momentum * (average over groups - running)
    for (long c = 0; c < C; ++c) {
      double bm = 0, bv = 0;
      for (long g = 0; g < k; ++g) bm += w.bn_mean[g * C + c], bv += w.bn_var[g * C + c];
      ema_mean[c] = float(ema_mean[c] + momentum * (bm / k - ema_mean[c]));
      ema_var[c] = float(ema_var[c] + momentum * (bv / k - ema_var[c]));
    }
  }
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
      if (nb == 3) da2 += gm[c] * bm[c], dv2 += gv[c] * bv[c];
      rm += gm[c], rv += gv[c];
      cm[c] += gm[c], cv[c] += gv[c];
    }
    row_mu[n] = rm, row_v[n] = rv;
  }
  double da[3] = {da0, da1, da2}, dvw[3] = {dv0, dv1, dv2};
  double wa0 = w.a[0], wa1 = w.a[1], wa2 = w.a[2], wb0 = w.b[0], wb1 = w.b[1], wb2 = w.b[2];
  bool batch_bn = nb == 3 && !eval;
  float *m = scratch<float>(4 * nc, 1), *s = m + nc, *k1 = s + nc, *k0 = k1 + nc;
  for (long n = 0; n < N; ++n) {
    long g = n / per;
    const double *mi = w.mean_in + n * C, *rs = w.rstd + n * C, *gm = dmu + n * C, *gv = dv + n * C;
    const double *bm = w.bn_mean + g * C, *cm = col_mu + g * C, *cv = col_v + g * C;
    double lm = w.ln_mean[n], row_m = wa1 * row_mu[n] / C, row_v2 = wb1 * row_v[n] * 2.0 / C,
           row_vv = wb1 * row_v[n] / C;
    float *mo = m + n * C, *so = s + n * C, *k1o = k1 + n * C, *k0o = k0 + n * C;
#pragma omp simd
    for (long c = 0; c < C; ++c) {
      double g_mean = wa0 * gm[c] + row_m + row_v2 * (mi[c] - lm);
      double g_var = wb0 * gv[c] + row_vv;
      if (batch_bn) {
        g_mean += wa2 * cm[c] / per + wb2 * cv[c] * 2.0 / per * (mi[c] - bm[c]);
        g_var += wb2 * cv[c] / per;
      }
      // dx = scale * dy + (2 f g_var / HW) * (x - mean_in) + g_mean / HW
      mo[c] = float(mi[c]);
      so[c] = float(weight[c] * rs[c]);
      k1o[c] = float(2.0 * f * g_var / HW);
      k0o[c] = float(g_mean / HW);
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
                const float* run_mean, const float* run_var, long k, double eps, float* ema_mean, float* ema_var,
                double momentum, double* workspace, int threads) {
  if (is_bf16)
    forward((const bf16*)x, (bf16*)y, cl, N, C, HW, weight, bias, mean_logits, var_logits, nb, run_mean,
            run_var, k, eps, ema_mean, ema_var, momentum, workspace, threads);
  else
    forward((const float*)x, (float*)y, cl, N, C, HW, weight, bias, mean_logits, var_logits, nb, run_mean,
            run_var, k, eps, ema_mean, ema_var, momentum, workspace, threads);
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
