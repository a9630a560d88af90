// CPU reference convolution (NCHW, weight (K, C/G, R, S)): im2col + GEMM per sample and
// group, a direct path for depthwise convolutions, no im2col for 1x1/stride-1/no-padding.
// y = conv(x, w) + b;  dx = conv_transpose(dy, w);  dw += corr(x, dy);  db += sum(dy).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "cpu/cpu_backend.h"

namespace cudarts::cpu {

namespace {

struct ConvGeometry {
  int64_t n, c, h, w;  // input
  int64_t k, r, s;     // output channels, kernel
  int64_t p, q;        // output spatial
  int64_t groups, cg, kg;
  int sh, sw, ph, pw, dh, dw;

  ConvGeometry(const Shape& x, const Shape& wt, const Shape& y, const Conv2dParams& prm)
      : n(x[0]),
        c(x[1]),
        h(x[2]),
        w(x[3]),
        k(wt[0]),
        r(wt[2]),
        s(wt[3]),
        p(y[2]),
        q(y[3]),
        groups(prm.groups),
        cg(x[1] / prm.groups),
        kg(wt[0] / prm.groups),
        sh(prm.stride_h),
        sw(prm.stride_w),
        ph(prm.pad_h),
        pw(prm.pad_w),
        dh(prm.dilation_h),
        dw(prm.dilation_w) {}

  int64_t col_rows() const { return cg * r * s; }
  int64_t col_cols() const { return p * q; }
  bool pointwise() const { return r == 1 && s == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  bool depthwise() const { return cg == 1 && kg == 1; }
};

// col (cg*r*s, p*q) <- input channels of one group of one sample (cg, h, w).
void im2col(const ConvGeometry& g, const float* x, float* col) {
  for (int64_t ci = 0; ci < g.cg; ++ci)
    for (int64_t ri = 0; ri < g.r; ++ri)
      for (int64_t si = 0; si < g.s; ++si) {
        float* row = col + ((ci * g.r + ri) * g.s + si) * g.p * g.q;
        const float* plane = x + ci * g.h * g.w;
        for (int64_t pi = 0; pi < g.p; ++pi) {
          const int64_t hi = pi * g.sh - g.ph + ri * g.dh;
          for (int64_t qi = 0; qi < g.q; ++qi) {
            const int64_t wi = qi * g.sw - g.pw + si * g.dw;
            row[pi * g.q + qi] =
                (hi >= 0 && hi < g.h && wi >= 0 && wi < g.w) ? plane[hi * g.w + wi] : 0.0f;
          }
        }
      }
}

// dx (cg, h, w) += col2im(col)
void col2im(const ConvGeometry& g, const float* col, float* dx) {
  for (int64_t ci = 0; ci < g.cg; ++ci)
    for (int64_t ri = 0; ri < g.r; ++ri)
      for (int64_t si = 0; si < g.s; ++si) {
        const float* row = col + ((ci * g.r + ri) * g.s + si) * g.p * g.q;
        float* plane = dx + ci * g.h * g.w;
        for (int64_t pi = 0; pi < g.p; ++pi) {
          const int64_t hi = pi * g.sh - g.ph + ri * g.dh;
          if (hi < 0 || hi >= g.h) continue;
          for (int64_t qi = 0; qi < g.q; ++qi) {
            const int64_t wi = qi * g.sw - g.pw + si * g.dw;
            if (wi >= 0 && wi < g.w) plane[hi * g.w + wi] += row[pi * g.q + qi];
          }
        }
      }
}

// Output columns q in [lo, hi) read input column q * stride + offset inside [0, width).
struct ColumnRange {
  int64_t lo, hi;
};
ColumnRange valid_columns(int64_t offset, int64_t stride, int64_t width, int64_t q) {
  int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t hi = width - 1 - offset < 0 ? 0 : (width - 1 - offset) / stride + 1;
  lo = std::min(lo, q);
  hi = std::min(hi, q);
  return {lo, std::max(lo, hi)};
}

// Depthwise forward for one (sample, channel) plane: y (p, q) = bias + sum of taps.
void depthwise_plane_fwd(const ConvGeometry& g, const float* x, const float* w, float bias,
                         float* y) {
  for (int64_t pi = 0; pi < g.p; ++pi) {
    float* out = y + pi * g.q;
    for (int64_t qi = 0; qi < g.q; ++qi) out[qi] = bias;
    for (int64_t ri = 0; ri < g.r; ++ri) {
      const int64_t hi = pi * g.sh - g.ph + ri * g.dh;
      if (hi < 0 || hi >= g.h) continue;
      const float* row = x + hi * g.w;
      for (int64_t si = 0; si < g.s; ++si) {
        const float wv = w[ri * g.s + si];
        const int64_t off = si * g.dw - g.pw;
        const ColumnRange c = valid_columns(off, g.sw, g.w, g.q);
        if (g.sw == 1) {
          const float* src = row + off;
          for (int64_t qi = c.lo; qi < c.hi; ++qi) out[qi] += wv * src[qi];
        } else {
          for (int64_t qi = c.lo; qi < c.hi; ++qi) out[qi] += wv * row[qi * g.sw + off];
        }
      }
    }
  }
}

// Depthwise backward-data for one plane: dx (h, w) = transposed taps of dy (=).
void depthwise_plane_bwd_data(const ConvGeometry& g, const float* dy, const float* w, float* dx) {
  std::memset(dx, 0, sizeof(float) * size_t(g.h * g.w));
  for (int64_t pi = 0; pi < g.p; ++pi) {
    const float* grad = dy + pi * g.q;
    for (int64_t ri = 0; ri < g.r; ++ri) {
      const int64_t hi = pi * g.sh - g.ph + ri * g.dh;
      if (hi < 0 || hi >= g.h) continue;
      float* row = dx + hi * g.w;
      for (int64_t si = 0; si < g.s; ++si) {
        const float wv = w[ri * g.s + si];
        const int64_t off = si * g.dw - g.pw;
        const ColumnRange c = valid_columns(off, g.sw, g.w, g.q);
        if (g.sw == 1) {
          float* dst = row + off;
          for (int64_t qi = c.lo; qi < c.hi; ++qi) dst[qi] += wv * grad[qi];
        } else {
          for (int64_t qi = c.lo; qi < c.hi; ++qi) row[qi * g.sw + off] += wv * grad[qi];
        }
      }
    }
  }
}

// Depthwise backward-filter for one channel over the batch: dw (r, s) += correlations.
void depthwise_channel_bwd_filter(const ConvGeometry& g, const float* x, const float* dy,
                                  int64_t in_img, int64_t out_img, float* dw) {
  for (int64_t ri = 0; ri < g.r; ++ri)
    for (int64_t si = 0; si < g.s; ++si) {
      const int64_t off = si * g.dw - g.pw;
      const ColumnRange c = valid_columns(off, g.sw, g.w, g.q);
      double acc = 0.0;
      for (int64_t ni = 0; ni < g.n; ++ni) {
        const float* xp = x + ni * in_img;
        const float* gp = dy + ni * out_img;
        for (int64_t pi = 0; pi < g.p; ++pi) {
          const int64_t hi = pi * g.sh - g.ph + ri * g.dh;
          if (hi < 0 || hi >= g.h) continue;
          const float* row = xp + hi * g.w;
          const float* grad = gp + pi * g.q;
          float part = 0.0f;
          if (g.sw == 1) {
            const float* src = row + off;
#pragma omp simd reduction(+ : part)
            for (int64_t qi = c.lo; qi < c.hi; ++qi) part += grad[qi] * src[qi];
          } else {
            for (int64_t qi = c.lo; qi < c.hi; ++qi) part += grad[qi] * row[qi * g.sw + off];
          }
          acc += part;
        }
      }
      dw[ri * g.s + si] += static_cast<float>(acc);
    }
}

// Scratch from the context's allocator, released at scope exit.
struct Scratch {
  Buffer buffer;
  Scratch(const std::shared_ptr<Allocator>& a, int64_t floats)
      : buffer(a, static_cast<size_t>(floats) * sizeof(float)) {}
  float* get() const { return static_cast<float*>(buffer.data()); }
};

// The input a convolution reads: x, or with a fused ReLU (relu_input) max(x, 0) in `scratch`,
// the values relu_fwd gives (x > 0 ? x : 0), so the fused and the unfused paths agree bit for bit.
const float* conv_input(const Tensor& x, const Conv2dParams& prm,
                        const std::shared_ptr<Allocator>& a, std::optional<Scratch>& scratch) {
  if (!prm.relu_input) return x.data();
  const int64_t n = x.numel();
  scratch.emplace(a, n);
  const float* in = x.data();
  float* out = scratch->get();
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
  return out;
}

}  // namespace

void CpuBackend::conv2d_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                            const Conv2dParams& prm) {
  const ConvGeometry g(x.shape(), w.shape(), y.shape(), prm);
  std::optional<Scratch> relu;
  const float* px = conv_input(x, prm, allocator_, relu);
  const float* pw = w.data();
  const float* pb = bias ? bias->data() : nullptr;
  float* py = y.data();
  const int64_t in_img = g.c * g.h * g.w, out_img = g.k * g.p * g.q, pq = g.p * g.q;

  if (g.depthwise()) {
#pragma omp parallel for collapse(2)
    for (int64_t ni = 0; ni < g.n; ++ni)
      for (int64_t ci = 0; ci < g.c; ++ci)
        depthwise_plane_fwd(g, px + ni * in_img + ci * g.h * g.w, pw + ci * g.r * g.s,
                            pb ? pb[ci] : 0.0f, py + ni * out_img + ci * pq);
    return;
  }

  const bool direct = g.pointwise();
  const int threads = omp_get_max_threads();
  const int64_t col_size = direct ? 0 : g.col_rows() * g.col_cols();
  Scratch scratch(allocator_, col_size * threads);
#pragma omp parallel for
  for (int64_t ni = 0; ni < g.n; ++ni) {
    float* col = scratch.get() + col_size * omp_get_thread_num();
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const float* xg = px + ni * in_img + gi * g.cg * g.h * g.w;
      float* yg = py + ni * out_img + gi * g.kg * pq;
      if (!direct) im2col(g, xg, col);
      sgemm(false, false, int(g.kg), int(pq), int(g.col_rows()), 1.0f,
            pw + gi * g.kg * g.col_rows(), int(g.col_rows()), direct ? xg : col, int(pq), 0.0f, yg,
            int(pq));
      if (pb)
        for (int64_t ki = 0; ki < g.kg; ++ki)
          for (int64_t j = 0; j < pq; ++j) yg[ki * pq + j] += pb[gi * g.kg + ki];
    }
  }
}

// With a fused ReLU, dx is then masked where x <= 0: relu_bwd's rule (y > 0 ? dy : 0 with
// y = relu(x) > 0 exactly when x > 0).
void CpuBackend::conv2d_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx,
                                 const Conv2dParams& prm, const Tensor* x) {
  conv2d_bwd_data_unmasked(dy, w, dx, prm);
  if (x) relu_bwd(dx, *x, dx);  // in place: x > 0 ? dx : 0
}

void CpuBackend::conv2d_bwd_data_unmasked(const Tensor& dy, const Tensor& w, Tensor& dx,
                                          const Conv2dParams& prm) {
  const ConvGeometry g(dx.shape(), w.shape(), dy.shape(), prm);
  const float* pg = dy.data();
  const float* pw = w.data();
  float* pd = dx.data();
  const int64_t in_img = g.c * g.h * g.w, out_img = g.k * g.p * g.q, pq = g.p * g.q;

  if (g.depthwise()) {
#pragma omp parallel for collapse(2)
    for (int64_t ni = 0; ni < g.n; ++ni)
      for (int64_t ci = 0; ci < g.c; ++ci)
        depthwise_plane_bwd_data(g, pg + ni * out_img + ci * pq, pw + ci * g.r * g.s,
                                 pd + ni * in_img + ci * g.h * g.w);
    return;
  }

  const bool direct = g.pointwise();
  const int threads = omp_get_max_threads();
  const int64_t col_size = direct ? 0 : g.col_rows() * g.col_cols();
  Scratch scratch(allocator_, col_size * threads);
#pragma omp parallel for
  for (int64_t ni = 0; ni < g.n; ++ni) {
    float* col = scratch.get() + col_size * omp_get_thread_num();
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      float* dg = pd + ni * in_img + gi * g.cg * g.h * g.w;
      const float* gy = pg + ni * out_img + gi * g.kg * pq;
      const float* wg = pw + gi * g.kg * g.col_rows();
      if (direct) {
        sgemm(true, false, int(g.cg), int(pq), int(g.kg), 1.0f, wg, int(g.cg), gy, int(pq), 0.0f,
              dg, int(pq));
      } else {
        sgemm(true, false, int(g.col_rows()), int(pq), int(g.kg), 1.0f, wg, int(g.col_rows()), gy,
              int(pq), 0.0f, col, int(pq));
        std::memset(dg, 0, sizeof(float) * g.cg * g.h * g.w);
        col2im(g, col, dg);
      }
    }
  }
}

void CpuBackend::conv2d_bwd_filter(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                                   const Conv2dParams& prm) {
  const ConvGeometry g(x.shape(), dw.shape(), dy.shape(), prm);
  std::optional<Scratch> relu;
  const float* px = conv_input(x, prm, allocator_, relu);
  const float* pg = dy.data();
  float* pdw = dw.data();
  const int64_t in_img = g.c * g.h * g.w, out_img = g.k * g.p * g.q, pq = g.p * g.q;

  if (dbias) {
    float* db = dbias->data();
#pragma omp parallel for
    for (int64_t ki = 0; ki < g.k; ++ki) {
      double s = 0.0;
      for (int64_t ni = 0; ni < g.n; ++ni)
        for (int64_t j = 0; j < pq; ++j) s += pg[ni * out_img + ki * pq + j];
      db[ki] += static_cast<float>(s);
    }
  }

  if (g.depthwise()) {
#pragma omp parallel for
    for (int64_t ci = 0; ci < g.c; ++ci)
      depthwise_channel_bwd_filter(g, px + ci * g.h * g.w, pg + ci * pq, in_img, out_img,
                                   pdw + ci * g.r * g.s);
    return;
  }

  // Each thread accumulates into its own copy of dw; the copies are summed at the end.
  const bool direct = g.pointwise();
  const int threads = omp_get_max_threads();
  const int64_t col_size = direct ? 0 : g.col_rows() * g.col_cols();
  const int64_t w_size = dw.numel();
  Scratch scratch(allocator_, (col_size + w_size) * threads);
  std::memset(scratch.get(), 0, sizeof(float) * (col_size + w_size) * threads);
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    float* col = scratch.get() + (col_size + w_size) * t;
    float* dw_local = col + col_size;
#pragma omp for
    for (int64_t ni = 0; ni < g.n; ++ni)
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float* xg = px + ni * in_img + gi * g.cg * g.h * g.w;
        const float* gy = pg + ni * out_img + gi * g.kg * pq;
        if (!direct) im2col(g, xg, col);
        sgemm(false, true, int(g.kg), int(g.col_rows()), int(pq), 1.0f, gy, int(pq),
              direct ? xg : col, int(pq), 1.0f, dw_local + gi * g.kg * g.col_rows(),
              int(g.col_rows()));
      }
  }
  for (int t = 0; t < threads; ++t) {
    const float* part = scratch.get() + (col_size + w_size) * t + col_size;
    for (int64_t i = 0; i < w_size; ++i) pdw[i] += part[i];
  }
}

// The group ops as the convolutions one by one (the reference the fused CUDA kernels are
// checked against).
void CpuBackend::depthwise_group_fwd(const Tensor& x, const std::vector<const Tensor*>& ws,
                                     const std::vector<Conv2dParams>& ps,
                                     const std::vector<Tensor*>& ys) {
  for (size_t j = 0; j < ws.size(); ++j) conv2d_fwd(x, *ws[j], nullptr, *ys[j], ps[j]);
}

void CpuBackend::depthwise_group_bwd_data(const std::vector<const Tensor*>& dys,
                                          const std::vector<const Tensor*>& ws,
                                          const std::vector<Conv2dParams>& ps, const Tensor* x,
                                          const std::vector<const Tensor*>& priors, Tensor& dx) {
  depthwise_group_bwd_data_one_by_one(*this, allocator_, dys, ws, ps, x, priors, dx);
}

void CpuBackend::depthwise_group_bwd_filter(const Tensor& x, const std::vector<const Tensor*>& dys,
                                            const std::vector<Conv2dParams>& ps,
                                            const std::vector<Tensor*>& dws) {
  for (size_t j = 0; j < dys.size(); ++j) conv2d_bwd_filter(x, *dys[j], *dws[j], nullptr, ps[j]);
}

}  // namespace cudarts::cpu
