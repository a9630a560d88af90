// CPU reference of the MixedOp kernels (mixing, scores, architecture gradient, Gumbel
// ranking, moving averages, ProxylessNAS rescale) and of the optimizer steps.
// Reductions accumulate in double; results are written with "=" unless the op says "+=".
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "cpu/cpu_backend.h"
#include "cudarts/philox.h"

namespace cudarts::cpu {

namespace {
// p = softmax of alpha over `members` (indices into alpha), in double.
std::vector<double> softmax_over(const float* alpha, const std::vector<int>& members) {
  double mx = -INFINITY;
  for (int i : members) mx = std::max(mx, double(alpha[i]));
  std::vector<double> p(members.size());
  double s = 0.0;
  for (size_t j = 0; j < members.size(); ++j) s += p[j] = std::exp(double(alpha[members[j]]) - mx);
  for (double& v : p) v /= s;
  return p;
}

std::vector<int> first_k(const Tensor& ranking, int k) {
  const int32_t* r = ranking.data_i32();
  const int64_t n = ranking.numel();
  std::vector<int> out(r, r + k);
  for (int i : out) CUDARTS_CHECK(i >= 0 && i < n, "ranking entry ", i, " outside [0, ", n, ")");
  return out;
}

std::vector<int> all_indices(int64_t k) {
  std::vector<int> v(static_cast<size_t>(k));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

double dot(const float* a, const float* b, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

void scale_into(float w, const float* x, int64_t n, float* y) {
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = w * x[i];
}

void CpuBackend::softmax(const Tensor& logits, Tensor& probs) {
  const std::vector<double> p = softmax_over(logits.data(), all_indices(logits.numel()));
  for (size_t i = 0; i < p.size(); ++i) probs.data()[i] = static_cast<float>(p[i]);
}

// Null entries (exact zeros) are left out of the sum; y = 0 when all are null.
void mix_accumulate(const std::vector<const float*>& xs, const float* weights, int64_t n,
                    float* out) {
  std::vector<const float*> src;
  std::vector<float> w;
  for (size_t k = 0; k < xs.size(); ++k)
    if (xs[k]) {
      src.push_back(xs[k]);
      w.push_back(weights[k]);
    }
  constexpr int64_t chunk = 4096;
  if (src.empty()) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  // Each chunk is summed in a local buffer and written at the end, so y may be any one of the
  // xs (in place: the op front door allows it).
#pragma omp parallel for if (n > 65536)
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t m = std::min(n, b + chunk) - b;
    float acc[chunk];
    for (int64_t i = 0; i < m; ++i) acc[i] = w[0] * src[0][b + i];
    for (size_t k = 1; k < src.size(); ++k) {
      const float wk = w[k];
      const float* x = src[k] + b;
      for (int64_t i = 0; i < m; ++i) acc[i] += wk * x[i];
    }
    std::copy(acc, acc + m, out + b);
  }
}

void CpuBackend::mix_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs, Tensor& y) {
  std::vector<const float*> src;
  for (const Tensor* x : xs) src.push_back(x ? x->data() : nullptr);
  mix_accumulate(src, weights.data(), y.numel(), y.data());
}

void CpuBackend::mix_bwd(const Tensor& weights, const Tensor& dy, const std::vector<Tensor*>& dxs) {
  const float* g = dy.data();
  const int64_t n = dy.numel();
  for (size_t k = 0; k < dxs.size(); ++k) {
    if (!dxs[k]) continue;
    scale_into(weights.data()[k], g, n, dxs[k]->data());
  }
}

void CpuBackend::mix_scores(const Tensor& dy, const std::vector<const Tensor*>& xs, Tensor& g) {
  for (size_t k = 0; k < xs.size(); ++k)
    g.data()[k] = xs[k] ? static_cast<float>(dot(dy.data(), xs[k]->data(), dy.numel())) : 0.0f;
}

// The two unfused computations, in the same order: the same bits as mix_bwd then mix_scores.
void CpuBackend::mix_bwd_scores(const Tensor& weights, const Tensor& dy,
                                const std::vector<const Tensor*>& xs,
                                const std::vector<Tensor*>& dxs, Tensor& g) {
  mix_bwd(weights, dy, dxs);
  mix_scores(dy, xs, g);
}

void CpuBackend::arch_grad(const Tensor& alpha, const Tensor& g, const Tensor* ranking,
                           int restrict_k, Tensor& dalpha) {
  const std::vector<int> members =
      ranking ? first_k(*ranking, restrict_k) : all_indices(alpha.numel());
  const std::vector<double> p = softmax_over(alpha.data(), members);
  double pg = 0.0;
  for (size_t j = 0; j < members.size(); ++j) pg += p[j] * g.data()[members[j]];
  for (size_t j = 0; j < members.size(); ++j)
    dalpha.data()[members[j]] += static_cast<float>(p[j] * (g.data()[members[j]] - pg));
}

void CpuBackend::softmax_many(const std::vector<const Tensor*>& logits,
                              const std::vector<Tensor*>& probs) {
  for (size_t i = 0; i < logits.size(); ++i) softmax(*logits[i], *probs[i]);
}

void CpuBackend::arch_grad_many(const std::vector<const Tensor*>& alphas,
                                const std::vector<const Tensor*>& gs,
                                const std::vector<Tensor*>& dalphas) {
  for (size_t i = 0; i < alphas.size(); ++i) arch_grad(*alphas[i], *gs[i], nullptr, 0, *dalphas[i]);
}

void CpuBackend::gumbel_rank(const Tensor& logits, const Tensor& offsets, uint64_t seed,
                             uint64_t offset, const uint64_t* shift, Tensor& ranking) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  const int32_t* off = offsets.data_i32();
  const int64_t segments = offsets.numel() - 1, total = logits.numel();
  CUDARTS_CHECK(off[0] == 0 && off[segments] == total, "gumbel_rank: offsets must run from 0 to ",
                total, ", found ", off[0], " .. ", off[segments]);
  for (int64_t s = 0; s < segments; ++s) {
    const int32_t b = off[s], e = off[s + 1];
    CUDARTS_CHECK(b < e, "gumbel_rank: segment ", s, " is empty or reversed [", b, ", ", e, ")");
    std::vector<std::pair<double, int>> keys;
    for (int32_t j = b; j < e; ++j) {
      const double u = philox_uniform(philox_word(seed, offset, 0, uint64_t(j)));
      keys.emplace_back(double(logits.data()[j]) - std::log(-std::log(u)), j - b);
    }
    // Descending key; ties broken by the lower index.
    std::stable_sort(keys.begin(), keys.end(),
                     [](const auto& x, const auto& y) { return x.first > y.first; });
    for (int32_t j = b; j < e; ++j) ranking.data_i32()[j] = keys[size_t(j - b)].second;
  }
}

void CpuBackend::gumbel_softmax(const Tensor& logits, uint64_t seed, uint64_t offset,
                                const uint64_t* shift, int64_t first, float tau, Tensor& soft) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  const int64_t k = logits.numel();
  const float* a = logits.data();
  double mx = -INFINITY;
  for (int64_t i = 0; i < k; ++i) mx = std::max(mx, double(a[i]));
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i) s += std::exp(double(a[i]) - mx);
  const double lse = mx + std::log(s);
  std::vector<double> z(static_cast<size_t>(k));
  double zmax = -INFINITY;
  for (int64_t i = 0; i < k; ++i) {
    const double u = philox_uniform(philox_word(seed, offset, 0, uint64_t(first + i)));
    z[size_t(i)] = (double(a[i]) - lse - std::log(-std::log(u))) / double(tau);
    zmax = std::max(zmax, z[size_t(i)]);
  }
  double zs = 0.0;
  for (int64_t i = 0; i < k; ++i) zs += std::exp(z[size_t(i)] - zmax);
  for (int64_t i = 0; i < k; ++i)
    soft.data()[i] = static_cast<float>(std::exp(z[size_t(i)] - zmax) / zs);
}

void CpuBackend::gumbel_softmax_bwd(const Tensor& logits, const Tensor& soft, const Tensor& dsoft,
                                    float tau, Tensor& dlogits) {
  const int64_t k = logits.numel();
  const float *a = logits.data(), *sf = soft.data(), *g = dsoft.data();
  double sg = 0.0;
  for (int64_t i = 0; i < k; ++i) sg += double(sf[i]) * g[i];
  std::vector<double> v(static_cast<size_t>(k));
  double vsum = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    v[size_t(i)] = double(sf[i]) * (double(g[i]) - sg) / double(tau);
    vsum += v[size_t(i)];
  }
  double mx = -INFINITY;
  for (int64_t i = 0; i < k; ++i) mx = std::max(mx, double(a[i]));
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i) s += std::exp(double(a[i]) - mx);
  for (int64_t i = 0; i < k; ++i) {
    const double p = std::exp(double(a[i]) - mx) / s;
    dlogits.data()[i] = static_cast<float>(dlogits.data()[i] + (v[size_t(i)] - p * vsum));
  }
}

void CpuBackend::batch_sum(const Tensor& x, float scale, Tensor& out) {
  const int64_t n = x.dim(0), s = out.numel();
  const float* px = x.data();
#pragma omp parallel for if (n * s > 65536)
  for (int64_t j = 0; j < s; ++j) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) acc += px[i * s + j];
    out.data()[j] = static_cast<float>(scale * acc);
  }
}

void CpuBackend::ma_update_scores(const Tensor& dy_sum, const Tensor& mu, Tensor& m,
                                  const Tensor& ranking, int k_eval, float lr, Tensor& g) {
  const int64_t k = m.dim(0), s = dy_sum.numel();
  const std::vector<int> eval = first_k(ranking, k_eval);
  std::vector<bool> in_eval(size_t(k), false);
  for (int i : eval) in_eval[size_t(i)] = true;
  for (int64_t i = 0; i < k; ++i) {
    float* mi = m.data() + i * s;
    const float* ui = mu.data() + i * s;
    if (in_eval[size_t(i)]) {
      for (int64_t j = 0; j < s; ++j) mi[j] += lr * (ui[j] - mi[j]);
      g.data()[i] = static_cast<float>(dot(dy_sum.data(), ui, s));
    } else {
      g.data()[i] = static_cast<float>(dot(dy_sum.data(), mi, s));
    }
  }
}

namespace {
double logsumexp_over(const float* alpha, const std::vector<int>& members) {
  double mx = -INFINITY;
  for (int i : members) mx = std::max(mx, double(alpha[i]));
  double s = 0.0;
  for (int i : members) s += std::exp(double(alpha[i]) - mx);
  return mx + std::log(s);
}
}  // namespace

void CpuBackend::masked_logsumexp(const Tensor& alpha, const Tensor& ranking, int k, Tensor& out) {
  out.data()[0] = static_cast<float>(logsumexp_over(alpha.data(), first_k(ranking, k)));
}

void CpuBackend::proxyless_rescale(Tensor& alpha, const Tensor& ranking, int k,
                                   const Tensor& lse_old) {
  const std::vector<int> members = first_k(ranking, k);
  const double shift = double(lse_old.data()[0]) - logsumexp_over(alpha.data(), members);
  for (int i : members) alpha.data()[i] = static_cast<float>(alpha.data()[i] + shift);
}

void CpuBackend::mark_ranked(const Tensor& ranking, int k, Tensor& mask) {
  for (int i : first_k(ranking, k)) mask.data()[i] = 1.0f;
}

namespace {
std::vector<int> mask_members(const Tensor& mask) {
  std::vector<int> m;
  for (int64_t i = 0; i < mask.numel(); ++i)
    if (mask.data()[i] != 0.0f) m.push_back(int(i));
  return m;
}
}  // namespace

void CpuBackend::mask_logsumexp(const Tensor& alpha, const Tensor& mask, Tensor& out) {
  const std::vector<int> members = mask_members(mask);
  out.data()[0] =
      members.empty() ? -INFINITY : static_cast<float>(logsumexp_over(alpha.data(), members));
}

void CpuBackend::mask_rescale(Tensor& alpha, const Tensor& mask, const Tensor& lse_old) {
  const std::vector<int> members = mask_members(mask);
  if (members.empty()) return;
  const double shift = double(lse_old.data()[0]) - logsumexp_over(alpha.data(), members);
  for (int i : members) alpha.data()[i] = static_cast<float>(alpha.data()[i] + shift);
}

void CpuBackend::sgd_step(const std::vector<OptimSlot>& slots, const SgdParams& p,
                          const Tensor* grad_scale, const Tensor* hyper) {
  const float gs = grad_scale ? grad_scale->data()[0] : 1.0f;
  if (gs == 0.0f) return;  // a skipped step (non-finite gradient norm): nothing changes
  const float lr = hyper ? hyper->data()[0] : p.lr;
  for (const OptimSlot& s : slots) {
    float* w = s.param->data();
    const float* g = s.grad->data();
    float* buf = p.momentum > 0.0f ? s.state0->data() : nullptr;
    const float* mask = s.mask ? s.mask->data() : nullptr;
    const int64_t n = s.param->numel();
#pragma omp parallel for simd if (parallel : n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      if (mask && mask[i] == 0.0f) continue;
      float d = gs * g[i] + p.weight_decay * w[i];
      if (buf) {
        buf[i] = p.momentum * buf[i] + d;
        d = p.nesterov ? d + p.momentum * buf[i] : buf[i];
      }
      w[i] -= lr * d;
    }
  }
}

void CpuBackend::adam_step(const std::vector<OptimSlot>& slots, const AdamParams& p,
                           const Tensor* grad_scale, const Tensor* hyper) {
  const float gs = grad_scale ? grad_scale->data()[0] : 1.0f;
  if (gs == 0.0f) return;  // a skipped step (non-finite gradient norm): nothing changes
  const std::array<float, 3> h =
      hyper ? std::array<float, 3>{hyper->data()[0], hyper->data()[1], hyper->data()[2]}
            : ops::adam_hyper(p);
  const float lr = h[0], bc1 = h[1], bc2 = h[2];
  for (const OptimSlot& s : slots) {
    float* w = s.param->data();
    const float* g = s.grad->data();
    float* m = s.state0->data();
    float* v = s.state1->data();
    const float* mask = s.mask ? s.mask->data() : nullptr;
    const int64_t n = s.param->numel();
#pragma omp parallel for simd if (parallel : n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      if (mask && mask[i] == 0.0f) continue;
      float d = gs * g[i];
      if (p.decoupled)
        w[i] *= 1.0f - lr * p.weight_decay;
      else
        d += p.weight_decay * w[i];
      m[i] = p.beta1 * m[i] + (1.0f - p.beta1) * d;
      v[i] = p.beta2 * v[i] + (1.0f - p.beta2) * d * d;
      w[i] -= lr * (m[i] / bc1) / (std::sqrt(v[i] / bc2) + p.eps);
    }
  }
}

void CpuBackend::global_norm(const std::vector<const Tensor*>& xs, Tensor& out) {
  double s = 0.0;
  for (const Tensor* t : xs) s += dot(t->data(), t->data(), t->numel());
  out.data()[0] = static_cast<float>(std::sqrt(s));
}

void CpuBackend::count_nonfinite(const std::vector<const Tensor*>& values, Tensor& state) {
  int32_t* s = state.data_i32();
  const int32_t call = s[0]++;
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isfinite(values[i]->data()[0])) continue;
    if (s[1] < 0) {
      s[1] = call;
      s[3] = int32_t(i);
    }
    ++s[2];
    break;
  }
}

void CpuBackend::metrics_add(const Tensor& loss, const Tensor& hits, float batch, Tensor& sums) {
  float* s = sums.data();
  const float l = loss.data()[0];
  if (!std::isfinite(l)) {
    s[3] += 1.0f;
    return;
  }
  s[0] += batch * l;
  s[1] += hits.data()[0];
  s[2] += batch;
}

void CpuBackend::clip_coefficient(const Tensor& norm, float max_norm, Tensor& coef) {
  const float n = norm.data()[0];
  coef.data()[0] = std::isfinite(n) ? std::min(1.0f, max_norm / (n + 1e-6f)) : 0.0f;
}

}  // namespace cudarts::cpu
