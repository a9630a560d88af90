// CPU reference batch normalisation (per channel over N, H, W) and 2-D pooling.
// BN: y = (x - mean) * invstd * gamma + beta; running stats use the unbiased variance.
// Pool: max routes the gradient to the first maximum; average excludes padding.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "cpu/cpu_backend.h"

namespace cudarts::cpu {

namespace {
// One channel's training statistics in double (two passes: the mean, then the moments about
// it) and the running statistics' move; batchnorm_fwd_train and batchnorm_stats share them.
struct ChannelStats {
  double mean, var, invstd;
};
ChannelStats channel_stats(const float* px, int64_t n, int64_t c, int64_t hw, int64_t ci,
                           float eps) {
  const int64_t m = n * hw;
  double sum = 0.0;
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t j = 0; j < hw; ++j) sum += px[(ni * c + ci) * hw + j];
  const double mean = sum / double(m);
  double sq = 0.0;
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t j = 0; j < hw; ++j) {
      const double d = px[(ni * c + ci) * hw + j] - mean;
      sq += d * d;
    }
  const double var = sq / double(m);
  return {mean, var, 1.0 / std::sqrt(var + double(eps))};
}

void move_running(const ChannelStats& st, int64_t m, const BatchNormParams& prm, float& rm,
                  float& rv) {
  rm = static_cast<float>((1.0 - prm.momentum) * rm + prm.momentum * st.mean);
  rv = static_cast<float>((1.0 - prm.momentum) * rv +
                          prm.momentum * st.var * double(m) / double(m - 1));
}

// y = x * sc + sh over channel ci, sc = invstd gamma, sh = beta - mean sc (the saved float
// statistics): the training output, which batchnorm_fwd_train writes and the normalised mixes
// recompute.
void normalise_channel(const float* px, float* py, int64_t n, int64_t c, int64_t hw, int64_t ci,
                       float mean, float invstd, float gamma, float beta) {
  const float sc = invstd * gamma;
  const float sh = beta - mean * sc;
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t j = 0; j < hw; ++j) {
      const int64_t i = (ni * c + ci) * hw + j;
      py[i] = px[i] * sc + sh;
    }
}
}  // namespace

void CpuBackend::batchnorm_fwd_train(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                                     Tensor* running_mean, Tensor* running_var, Tensor& y,
                                     Tensor& save_mean, Tensor& save_invstd,
                                     const BatchNormParams& prm) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const float* px = x.data();
  float* py = y.data();
#pragma omp parallel for
  for (int64_t ci = 0; ci < c; ++ci) {
    const ChannelStats st = channel_stats(px, n, c, hw, ci, prm.eps);
    save_mean.data()[ci] = static_cast<float>(st.mean);
    save_invstd.data()[ci] = static_cast<float>(st.invstd);
    if (running_mean)
      move_running(st, n * hw, prm, running_mean->data()[ci], running_var->data()[ci]);
    normalise_channel(px, py, n, c, hw, ci, static_cast<float>(st.mean),
                      static_cast<float>(st.invstd), gamma ? gamma->data()[ci] : 1.0f,
                      beta ? beta->data()[ci] : 0.0f);
  }
}

void CpuBackend::batchnorm_fwd_infer(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                                     const Tensor& running_mean, const Tensor& running_var,
                                     Tensor& y, float eps) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const float* px = x.data();
  float* py = y.data();
#pragma omp parallel for collapse(2)
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t ci = 0; ci < c; ++ci) {
      const float invstd = 1.0f / std::sqrt(running_var.data()[ci] + eps);
      const float sc = invstd * (gamma ? gamma->data()[ci] : 1.0f);
      const float sh = (beta ? beta->data()[ci] : 0.0f) - running_mean.data()[ci] * sc;
      const int64_t base = (ni * c + ci) * hw;
      for (int64_t j = 0; j < hw; ++j) py[base + j] = px[base + j] * sc + sh;
    }
}

namespace {
// Per channel ci: {sum dy, sum dy (x - mean) invstd} in double, in one fixed order (the sums
// batchnorm_bwd and batchnorm_bwd_sums share).
std::pair<double, double> channel_dy_sums(const float* pg, const float* px, int64_t n, int64_t c,
                                          int64_t hw, int64_t ci, double mean, double invstd) {
  double s0 = 0.0, s1 = 0.0;
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t j = 0; j < hw; ++j) {
      const int64_t i = (ni * c + ci) * hw + j;
      s0 += pg[i];
      s1 += double(pg[i]) * (double(px[i]) - mean) * invstd;
    }
  return {s0, s1};
}
}  // namespace

namespace {
// dx over channel ci (batchnorm_bwd's formula; dgamma, dbeta += when given); batchnorm_bwd and
// mix_norm_bwd share it.
void bn_bwd_channel(const float* pg, const float* px, int64_t n, int64_t c, int64_t hw, int64_t ci,
                    double mean, double invstd, double gamma, float* pd, float* dgamma,
                    float* dbeta) {
  const int64_t m = n * hw;
  const auto [sum_dy, sum_dy_xhat] = channel_dy_sums(pg, px, n, c, hw, ci, mean, invstd);
  if (dgamma) {
    dgamma[ci] += static_cast<float>(sum_dy_xhat);
    dbeta[ci] += static_cast<float>(sum_dy);
  }
  const double k = gamma * invstd / double(m);
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t j = 0; j < hw; ++j) {
      const int64_t i = (ni * c + ci) * hw + j;
      const double xhat = (px[i] - mean) * invstd;
      pd[i] = static_cast<float>(k * (double(m) * pg[i] - sum_dy - xhat * sum_dy_xhat));
    }
}
}  // namespace

void CpuBackend::batchnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                               const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                               Tensor* dgamma, Tensor* dbeta) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
#pragma omp parallel for
  for (int64_t ci = 0; ci < c; ++ci)
    bn_bwd_channel(dy.data(), x.data(), n, c, hw, ci, save_mean.data()[ci], save_invstd.data()[ci],
                   gamma ? gamma->data()[ci] : 1.0, dx.data(), dgamma ? dgamma->data() : nullptr,
                   dbeta ? dbeta->data() : nullptr);
}

// ---- the normalised mixes: the unfused computations (batchnorm_fwd_train's statistics and
// output, mix_fwd, mix_bwd, mix_scores, batchnorm_bwd) through the same helpers, so a fused
// edge gives the unfused edge's numbers bit for bit.
void CpuBackend::batchnorm_stats(const std::vector<const Tensor*>& xs,
                                 const std::vector<bool>& normed, Tensor& mean, Tensor& invstd,
                                 const std::vector<Tensor*>& running_means,
                                 const std::vector<Tensor*>& running_vars,
                                 const BatchNormParams& prm) {
  const int64_t c = mean.dim(1);
  for (size_t i = 0; i < xs.size(); ++i) {
    float* pm = mean.data() + int64_t(i) * c;
    float* pi = invstd.data() + int64_t(i) * c;
    if (!normed[i]) {
      std::fill(pm, pm + c, 0.0f);
      std::fill(pi, pi + c, 1.0f);
      continue;
    }
    const Tensor& x = *xs[i];
    const int64_t n = x.dim(0), hw = x.dim(2) * x.dim(3);
#pragma omp parallel for
    for (int64_t ci = 0; ci < c; ++ci) {
      const ChannelStats st = channel_stats(x.data(), n, c, hw, ci, prm.eps);
      pm[ci] = static_cast<float>(st.mean);
      pi[ci] = static_cast<float>(st.invstd);
      if (!running_means.empty())
        move_running(st, n * hw, prm, running_means[i]->data()[ci], running_vars[i]->data()[ci]);
    }
  }
}

namespace {
// The candidates' outputs t_i as the mixes read them: xs[i], or for a normed entry its training
// output written into scratch from the context's allocator (aligned as tensors are).
struct MixTerms {
  std::vector<const float*> t;
  std::vector<Buffer> scratch;
  MixTerms(const std::shared_ptr<Allocator>& a, const std::vector<const Tensor*>& xs,
           const std::vector<bool>& normed, const Tensor& mean, const Tensor& invstd)
      : t(xs.size(), nullptr) {
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!xs[i]) continue;
      if (!normed[i]) {
        t[i] = xs[i]->data();
        continue;
      }
      const Tensor& x = *xs[i];
      const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
      scratch.emplace_back(a, size_t(x.numel()) * sizeof(float));
      float* out = static_cast<float*>(scratch.back().data());
#pragma omp parallel for
      for (int64_t ci = 0; ci < c; ++ci)
        normalise_channel(x.data(), out, n, c, hw, ci, mean.data()[int64_t(i) * c + ci],
                          invstd.data()[int64_t(i) * c + ci], 1.0f, 0.0f);
      t[i] = out;
    }
  }
};
}  // namespace

void CpuBackend::mix_norm_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs,
                              const std::vector<bool>& normed, const Tensor& mean,
                              const Tensor& invstd, Tensor& y) {
  const MixTerms terms(allocator_, xs, normed, mean, invstd);
  mix_accumulate(terms.t, weights.data(), y.numel(), y.data());
}

void CpuBackend::mix_norm_bwd(const Tensor& weights, const Tensor& dy,
                              const std::vector<const Tensor*>& xs, const std::vector<bool>& normed,
                              const Tensor& mean, const Tensor& invstd,
                              const std::vector<Tensor*>& dxs, Tensor* g) {
  const int64_t total = dy.numel();
  if (g) {  // mix_scores over the t_i
    const MixTerms terms(allocator_, xs, normed, mean, invstd);
    for (size_t i = 0; i < xs.size(); ++i)
      g->data()[i] = terms.t[i] ? static_cast<float>(dot(dy.data(), terms.t[i], total)) : 0.0f;
  }
  const std::optional<Buffer> scaled =
      std::any_of(normed.begin(), normed.end(), [](bool b) { return b; })
          ? std::optional<Buffer>(std::in_place, allocator_, size_t(total) * sizeof(float))
          : std::nullopt;
  for (size_t i = 0; i < dxs.size(); ++i) {
    if (!dxs[i]) continue;
    // mix_bwd: weights[i] dy, into the gradient or (normed) into scratch for batchnorm_bwd.
    float* d = normed[i] ? static_cast<float*>(scaled->data()) : dxs[i]->data();
    scale_into(weights.data()[i], dy.data(), total, d);
    if (!normed[i]) continue;
    const Tensor& x = *xs[i];
    const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
#pragma omp parallel for
    for (int64_t ci = 0; ci < c; ++ci)
      bn_bwd_channel(d, x.data(), n, c, hw, ci, mean.data()[int64_t(i) * c + ci],
                     invstd.data()[int64_t(i) * c + ci], 1.0, dxs[i]->data(), nullptr, nullptr);
  }
}

void CpuBackend::batchnorm_moments(const Tensor& x, const Tensor& shift, Tensor& moments) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const float* px = x.data();
  float* pm = moments.data();
#pragma omp parallel for
  for (int64_t ci = 0; ci < c; ++ci) {
    const double s = shift.data()[ci];
    double m0 = 0.0, m1 = 0.0;
    for (int64_t ni = 0; ni < n; ++ni)
      for (int64_t j = 0; j < hw; ++j) {
        const double d = double(px[(ni * c + ci) * hw + j]) - s;
        m0 += d;
        m1 += d * d;
      }
    pm[ci] = static_cast<float>(m0);
    pm[c + ci] = static_cast<float>(m1);
  }
}

void CpuBackend::batchnorm_moments_finish(const Tensor& moments, const Tensor& shift, double count,
                                          Tensor& mean, Tensor& var, Tensor& invstd,
                                          Tensor* running_mean, Tensor* running_var,
                                          const BatchNormParams& p) {
  const int64_t c = moments.dim(1);
  const float* pm = moments.data();
  for (int64_t ci = 0; ci < c; ++ci) {
    const double d = double(pm[ci]) / count;
    const double m = double(shift.data()[ci]) + d;
    const double v = std::max(double(pm[c + ci]) / count - d * d, 0.0);
    mean.data()[ci] = static_cast<float>(m);
    var.data()[ci] = static_cast<float>(v);
    invstd.data()[ci] = static_cast<float>(1.0 / std::sqrt(v + double(p.eps)));
    if (running_mean) {
      float& rm = running_mean->data()[ci];
      float& rv = running_var->data()[ci];
      rm = static_cast<float>((1.0 - p.momentum) * rm + p.momentum * m);
      rv = static_cast<float>((1.0 - p.momentum) * rv + p.momentum * v * count / (count - 1.0));
    }
  }
}

void CpuBackend::batchnorm_bwd_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                    const Tensor& invstd, Tensor& sums) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const float *px = x.data(), *pg = dy.data();
  float* ps = sums.data();
#pragma omp parallel for
  for (int64_t ci = 0; ci < c; ++ci) {
    const auto [s0, s1] = channel_dy_sums(pg, px, n, c, hw, ci, mean.data()[ci], invstd.data()[ci]);
    ps[ci] = static_cast<float>(s0);
    ps[c + ci] = static_cast<float>(s1);
  }
}

void CpuBackend::batchnorm_bwd_apply(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                                     const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                                     double count, Tensor& dx) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  const float *px = x.data(), *pg = dy.data(), *ps = sums.data();
  float* pd = dx.data();
#pragma omp parallel for
  for (int64_t ci = 0; ci < c; ++ci) {
    const double m = mean.data()[ci], is = invstd.data()[ci];
    const double g = gamma ? gamma->data()[ci] : 1.0;
    const double a0 = double(ps[ci]) / count, a1 = double(ps[c + ci]) / count;
    for (int64_t ni = 0; ni < n; ++ni)
      for (int64_t j = 0; j < hw; ++j) {
        const int64_t i = (ni * c + ci) * hw + j;
        const double xhat = (double(px[i]) - m) * is;
        pd[i] = static_cast<float>(g * is * (double(pg[i]) - a0 - xhat * a1));
      }
  }
}

namespace {
struct Window {
  int64_t h0, h1, w0, w1;  // valid input rows [h0, h1), columns [w0, w1)
};

Window window(const Pool2dParams& p, int64_t pi, int64_t qi, int64_t h, int64_t w) {
  const int64_t hs = pi * p.stride_h - p.pad_h, ws = qi * p.stride_w - p.pad_w;
  return {std::max<int64_t>(hs, 0), std::min<int64_t>(hs + p.kernel_h, h), std::max<int64_t>(ws, 0),
          std::min<int64_t>(ws + p.kernel_w, w)};
}
}  // namespace

void CpuBackend::pool2d_fwd(const Tensor& x, Tensor& y, const Pool2dParams& p) {
  const int64_t nc = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ph = y.dim(2), pw = y.dim(3);
  const float* px = x.data();
  float* py = y.data();
#pragma omp parallel for
  for (int64_t i = 0; i < nc; ++i) {
    const float* plane = px + i * h * w;
    for (int64_t pi = 0; pi < ph; ++pi)
      for (int64_t qi = 0; qi < pw; ++qi) {
        const Window win = window(p, pi, qi, h, w);
        float out;
        if (p.mode == PoolMode::Max) {
          out = -std::numeric_limits<float>::infinity();
          for (int64_t a = win.h0; a < win.h1; ++a)
            for (int64_t b = win.w0; b < win.w1; ++b) out = std::max(out, plane[a * w + b]);
        } else {
          double s = 0.0;
          for (int64_t a = win.h0; a < win.h1; ++a)
            for (int64_t b = win.w0; b < win.w1; ++b) s += plane[a * w + b];
          out = static_cast<float>(s / double((win.h1 - win.h0) * (win.w1 - win.w0)));
        }
        py[(i * ph + pi) * pw + qi] = out;
      }
  }
}

void CpuBackend::pool2d_bwd(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                            const Pool2dParams& p) {
  (void)y;
  const int64_t nc = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t ph = dy.dim(2), pw = dy.dim(3);
  const float* px = x.data();
  const float* pg = dy.data();
  float* pd = dx.data();
#pragma omp parallel for
  for (int64_t i = 0; i < nc; ++i) {
    const float* plane = px + i * h * w;
    float* dplane = pd + i * h * w;
    std::memset(dplane, 0, sizeof(float) * h * w);
    for (int64_t pi = 0; pi < ph; ++pi)
      for (int64_t qi = 0; qi < pw; ++qi) {
        const Window win = window(p, pi, qi, h, w);
        const float g = pg[(i * ph + pi) * pw + qi];
        if (p.mode == PoolMode::Max) {
          // The first maximum of the window (NaN never wins). Selects instead of a branch: the
          // branch mispredicted on random data (10% of a CPU search).
          int64_t best = win.h0 * w + win.w0;
          float best_v = plane[best];
          for (int64_t a = win.h0; a < win.h1; ++a)
            for (int64_t b = win.w0; b < win.w1; ++b) {
              const int64_t idx = a * w + b;
              const float v = plane[idx];
              const bool better = v > best_v;
              best = better ? idx : best;
              best_v = better ? v : best_v;
            }
          dplane[best] += g;
        } else {
          const float share = g / float((win.h1 - win.h0) * (win.w1 - win.w0));
          for (int64_t a = win.h0; a < win.h1; ++a)
            for (int64_t b = win.w0; b < win.w1; ++b) dplane[a * w + b] += share;
        }
      }
  }
}

}  // namespace cudarts::cpu
