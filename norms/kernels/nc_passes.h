// Per-(n, c) passes shared by the compiled CPU norm kernels (sn_cpu.cpp, gn_cpu.cpp): loads and
// stores of float32 / bfloat16, the shifted sums (moments, gradient sums) and the elementwise pass
// y = (x - m) * s + t (or dx = s * dy + (x - m) * k1 + t) with per-(n, c) float coefficients, for
// NCHW and channels_last. Everything sits in an anonymous namespace: each source gets its own copy.
#pragma once
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

// Reductions accumulate in float lanes over at most kRows positions (channels_last) or kRows vectors
// of kLanes positions (NCHW) and then add into double, so the float rounding is that of a short sum
// whatever H*W is. GCC lowers the 16-lane vector types to whatever the CPU has.
typedef float v16 __attribute__((vector_size(64)));
typedef double v16d __attribute__((vector_size(128)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));
const long kLanes = 16, kRows = 16, kGroup = 64;

inline v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v16 load16(const bf16* p) {
  v16h h;
  std::memcpy(&h, p, sizeof h);
  v16u bits = __builtin_convertvector(h, v16u) << 16;
  v16 v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
template <class T>
inline v16 load_lanes(const T* p, long width) {  // the first `width` lanes, zeros after
  if (width == kLanes) return load16(p);
  if (width <= 0) return v16{};
  float lanes[kLanes] = {0};
  for (long i = 0; i < width; ++i) lanes[i] = load(p, i);
  return load16(lanes);
}
inline void store16(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
inline void add_wide(double* p, v16 f) {  // p[0:16] += f
  v16d d;
  std::memcpy(&d, p, sizeof d);
  d += __builtin_convertvector(f, v16d);
  std::memcpy(p, &d, sizeof d);
}

// For every (n, c): with dy, a = sum dy and b = sum dy * (x - shift); without, a = sum (x - shift) and
// b = sum (x - shift)^2; shift = float(center[n, c]), or the plane's first value without center.
// Shifted sums stay exact when the mean is far larger than the spread. Calls out(i, shift, a, b).
template <class T, class Out>
void plane_sums(const T* x, const T* dy, int cl, long N, long C, long HW, const double* center, Out out,
                int threads) {
  int nt = N * C * HW < kSerial ? 1 : threads;
  if (!cl) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long i = 0; i < N * C; ++i) {
      const T *p = x + i * HW, *g = dy ? dy + i * HW : nullptr;
      float shift = center ? float(center[i]) : load(p, 0);
      v16 sh = shift - v16{};
      v16d wa = {}, wb = {};
      long j = 0;
      while (j + kLanes <= HW) {
        v16 va = {}, vb = {};
        for (long r = 0; r < kRows && j + kLanes <= HW; ++r, j += kLanes) {
          v16 d = load16(p + j) - sh;
          v16 u = g ? load16(g + j) : d;
          va += u;
          vb += u * d;
        }
        wa += __builtin_convertvector(va, v16d), wb += __builtin_convertvector(vb, v16d);
      }
      double a = 0, b = 0;
      for (long l = 0; l < kLanes; ++l) a += wa[l], b += wb[l];
      for (; j < HW; ++j) {
        double d = double(load(p, j)) - shift, u = g ? double(load(g, j)) : d;
        a += u, b += u * d;
      }
      out(i, shift, a, b);
    }
    return;
  }
  // channels_last: a task is kGroup = 4 x 16 channels of one sample over all positions, summed in
  // registers over kRows positions at a time (256 contiguous bytes of fp32 per position and tensor).
  long groups = (C + kGroup - 1) / kGroup;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (long t = 0; t < N * groups; ++t) {
    long n = t / groups, g0 = (t % groups) * kGroup, gw = std::min(kGroup, C - g0);
    long w0 = std::min(kLanes, gw), w1 = std::min(kLanes, std::max(0L, gw - kLanes)),
         w2 = std::min(kLanes, std::max(0L, gw - 2 * kLanes)), w3 = std::max(0L, gw - 3 * kLanes);
    const T *base = x + n * HW * C + g0, *gbase = dy ? dy + n * HW * C + g0 : nullptr;
    alignas(64) float shift[kGroup] = {0};
    alignas(64) double a[kGroup] = {0}, b[kGroup] = {0};
    for (long c = 0; c < gw; ++c) shift[c] = center ? float(center[n * C + g0 + c]) : load(base, c);
    v16 h0 = load16(shift), h1 = load16(shift + 16), h2 = load16(shift + 32), h3 = load16(shift + 48);
    for (long j0 = 0; j0 < HW; j0 += kRows) {
      v16 a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
      for (long j = j0; j < std::min(HW, j0 + kRows); ++j) {
        const T *row = base + j * C, *grow = gbase ? gbase + j * C : nullptr;
        v16 d0 = load_lanes(row, w0) - h0, d1 = load_lanes(row + 16, w1) - h1;
        v16 d2 = load_lanes(row + 32, w2) - h2, d3 = load_lanes(row + 48, w3) - h3;
        v16 u0 = d0, u1 = d1, u2 = d2, u3 = d3;
        if (grow) {
          u0 = load_lanes(grow, w0), u1 = load_lanes(grow + 16, w1);
          u2 = load_lanes(grow + 32, w2), u3 = load_lanes(grow + 48, w3);
        }
        a0 += u0, a1 += u1, a2 += u2, a3 += u3;
        b0 += u0 * d0, b1 += u1 * d1, b2 += u2 * d2, b3 += u3 * d3;
      }
      add_wide(a, a0), add_wide(a + 16, a1), add_wide(a + 32, a2), add_wide(a + 48, a3);
      add_wide(b, b0), add_wide(b + 16, b1), add_wide(b + 32, b2), add_wide(b + 48, b3);
    }
    for (long c = 0; c < gw; ++c) out(n * C + g0 + c, shift[c], a[c], b[c]);
  }
}

// Per-(n, c) mean and biased variance.
template <class T>
void moments(const T* x, int cl, long N, long C, long HW, double* mean, double* var, int threads) {
  double inv = 1.0 / HW;
  plane_sums(x, (const T*)nullptr, cl, N, C, HW, nullptr, [=](long i, float shift, double a, double b) {
    double m = a * inv;
    mean[i] = shift + m;
    var[i] = std::max(b * inv - m * m, 0.0);
  }, threads);
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

// Per-(n, c) sums of dy and dy * (x - mean_in), centered on float(mean_in) and corrected for the rounding.
template <class T>
void grad_sums(const T* x, const T* dy, int cl, long N, long C, long HW, const double* mean, double* s1,
               double* s2, int threads) {
  plane_sums(x, dy, cl, N, C, HW, mean, [=](long i, float shift, double a, double b) {
    s1[i] = a;
    s2[i] = b - (mean[i] - double(shift)) * a;
  }, threads);
}

}  // namespace
