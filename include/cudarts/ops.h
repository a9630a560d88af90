// The op table: every numerical operation of cudarts, declared once.
// Each function validates devices, dtypes and shapes (throwing cudarts::Error that names
// the op and the shapes), then runs on the backend of the context: the CPU reference
// (src/cpu) or the CUDA backend (cuda/). Outputs are preallocated by the caller.
// Gradient contract: activation gradients are written (=), parameter gradients are
// accumulated (+=).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cudarts/context.h"
#include "cudarts/tensor.h"

namespace cudarts {

struct Conv2dParams {
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;
  // A ReLU fused in front: the convolution reads max(x, 0) (x > 0 ? x : 0) where it reads x,
  // and conv2d_bwd_data, given x, writes the ReLU's backward too (dx = 0 where x <= 0). The
  // ReLU's output is never materialised (the own depthwise kernels apply it as they load).
  bool relu_input = false;
  static Conv2dParams make(int stride, int pad, int dilation = 1, int groups = 1) {
    return {stride, stride, pad, pad, dilation, dilation, groups};
  }
};

enum class PoolMode { Max, Average };  // Average excludes padding from the count

struct Pool2dParams {
  PoolMode mode = PoolMode::Max;
  int kernel_h = 2, kernel_w = 2;
  int stride_h = 2, stride_w = 2;
  int pad_h = 0, pad_w = 0;
  static Pool2dParams make(PoolMode mode, int kernel, int stride, int pad) {
    return {mode, kernel, kernel, stride, stride, pad, pad};
  }
};

struct BatchNormParams {
  float momentum = 0.1f;  // running = (1 - momentum) * running + momentum * batch
  float eps = 1e-5f;
};

// Training-time augmentation (DARTS CIFAR recipe): random crop from the image zero-padded by
// `pad`, random horizontal flip, cutout (a zeroed square of side `cutout`, centre uniform over
// the image, clipped at the border). Per-sample randomness from Philox words 8n .. 8n+4.
struct AugmentParams {
  int pad = 4;
  bool flip = true;
  int cutout = 0;  // 0: no cutout
};

struct SgdParams {
  float lr = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;  // true: AdamW (p -= lr wd p), false: Adam (g += wd p)
  int64_t step = 1;        // 1-based step number, for the bias corrections
};

// A parameter, its gradient and the optimizer's per-parameter state for one update.
struct OptimSlot {
  Tensor* param = nullptr;
  const Tensor* grad = nullptr;
  Tensor* state0 = nullptr;  // SGD momentum buffer / Adam first moment
  Tensor* state1 = nullptr;  // Adam second moment
  // Optional, the parameter's shape: elements where mask == 0 are left as they are (parameter
  // and state), e.g. the alphas outside a ProxylessNAS evaluation set.
  const Tensor* mask = nullptr;
};

namespace ops {

// The name of every op below that runs on a backend, in declaration order (the profiler's op
// labels; the op-parity test requires cases for each).
const std::vector<std::string>& op_names();

// ---- memory ----
void fill(Context& ctx, Tensor& t, float value);
void copy(Context& ctx, const Tensor& src, Tensor& dst);  // same device, same numel

// ---- convolution (NCHW; weight (Cout, Cin/groups, kh, kw)) ----
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p);
void conv2d_fwd(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                const Conv2dParams& p);
// x: the forward input, given exactly when p.relu_input (the ReLU's mask).
void conv2d_bwd_data(Context& ctx, const Tensor& dy, const Tensor& w, Tensor& dx,
                     const Conv2dParams& p, const Tensor* x = nullptr);
void conv2d_bwd_filter(Context& ctx, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                       const Conv2dParams& p);
// Several depthwise convolutions of one input (an edge's convolution candidates, each starting
// with one), x read once: ys[j] = conv2d_fwd(x, ws[j], no bias, ps[j]) for every j. Each is
// depthwise (groups = C, weight (C, 1, R, S)); relu_input is the same for all of them.
void depthwise_group_fwd(Context& ctx, const Tensor& x, const std::vector<const Tensor*>& ws,
                         const std::vector<Conv2dParams>& ps, const std::vector<Tensor*>& ys);
// Their input gradient summed with the other gradients of that input, in one pass:
// dx = ((priors[0] + priors[1] + ...) + d_0) + d_1 + ..., left to right, where d_j =
// conv2d_bwd_data(dys[j], ws[j], ps[j], x) (x given exactly when relu_input: the ReLU's mask).
// The same bits as the d_j computed one by one and add_n over priors then d_j. priors may be
// empty; none of them may overlap dx.
void depthwise_group_bwd_data(Context& ctx, const std::vector<const Tensor*>& dys,
                              const std::vector<const Tensor*>& ws,
                              const std::vector<Conv2dParams>& ps, const Tensor* x,
                              const std::vector<const Tensor*>& priors, Tensor& dx);
// Their filter gradients: dws[j] += conv2d_bwd_filter(x, dys[j], ps[j]) for every j (no bias),
// the same bits as one by one; x is read as max(x, 0) with relu_input (the same for all).
void depthwise_group_bwd_filter(Context& ctx, const Tensor& x,
                                const std::vector<const Tensor*>& dys,
                                const std::vector<Conv2dParams>& ps,
                                const std::vector<Tensor*>& dws);

// ---- batch normalisation over (N, H, W) per channel ----
// Training: batch statistics (biased variance for normalising); running statistics are
// updated (unbiased variance) when running_mean/running_var are given; gamma/beta optional
// (affine = false). save_mean / save_invstd (C) are what backward needs.
void batchnorm_fwd_train(Context& ctx, const Tensor& x, const Tensor* gamma, const Tensor* beta,
                         Tensor* running_mean, Tensor* running_var, Tensor& y, Tensor& save_mean,
                         Tensor& save_invstd, const BatchNormParams& p);
void batchnorm_fwd_infer(Context& ctx, const Tensor& x, const Tensor* gamma, const Tensor* beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                         float eps);
void batchnorm_bwd(Context& ctx, const Tensor& dy, const Tensor& x, const Tensor* gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor* dgamma,
                   Tensor* dbeta);

// Synchronised batch normalisation (statistics over the batches of every rank): the per-channel
// sums each rank contributes and the steps between the reductions. Rank-local forms of
// batchnorm_fwd_train / batchnorm_bwd, the same formulas.
// moments (2, C) = {sum (x - shift_c), sum (x - shift_c)^2} over (N, H, W) (=).
void batchnorm_moments(Context& ctx, const Tensor& x, const Tensor& shift, Tensor& moments);
// From moments over `count` values per channel (all ranks): mean = shift + m0 / count, biased
// var = m1 / count - (m0 / count)^2, invstd = 1 / sqrt(var + eps) (=); the running statistics
// (when given) move by momentum towards mean and the unbiased variance.
void batchnorm_moments_finish(Context& ctx, const Tensor& moments, const Tensor& shift,
                              double count, Tensor& mean, Tensor& var, Tensor& invstd,
                              Tensor* running_mean, Tensor* running_var, const BatchNormParams& p);
// sums (2, C) = {sum dy, sum dy (x - mean) invstd} (=).
void batchnorm_bwd_sums(Context& ctx, const Tensor& dy, const Tensor& x, const Tensor& mean,
                        const Tensor& invstd, Tensor& sums);
// dx = gamma invstd (dy - sums0 / count - xhat sums1 / count) (=), sums over `count` values.
void batchnorm_bwd_apply(Context& ctx, const Tensor& dy, const Tensor& x, const Tensor* gamma,
                         const Tensor& mean, const Tensor& invstd, const Tensor& sums, double count,
                         Tensor& dx);

// ---- activations ----
void relu_fwd(Context& ctx, const Tensor& x, Tensor& y);
void relu_bwd(Context& ctx, const Tensor& dy, const Tensor& y, Tensor& dx);

// ---- pooling (max, or average excluding padding) ----
Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p);
void pool2d_fwd(Context& ctx, const Tensor& x, Tensor& y, const Pool2dParams& p);
void pool2d_bwd(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                const Pool2dParams& p);
void global_avgpool_fwd(Context& ctx, const Tensor& x, Tensor& y);  // (N,C,H,W) -> (N,C)
void global_avgpool_bwd(Context& ctx, const Tensor& dy, Tensor& dx);

// ---- linear: y (N, Out) = x (N, In) . w (Out, In)^T + b ----
void linear_fwd(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void linear_bwd_data(Context& ctx, const Tensor& dy, const Tensor& w, Tensor& dx);
void linear_bwd_weight(Context& ctx, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias);

// ---- elementwise ----
void add(Context& ctx, const Tensor& a, const Tensor& b, Tensor& y);  // y = a + b
void scale(Context& ctx, const Tensor& x, float alpha, Tensor& y);    // y = alpha x
void axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y);     // y += alpha x
// y = ((xs[0] + xs[1]) + xs[2]) + ... in float, left to right (=): the sum add + axpy would
// give, in one pass. Every entry non-null, all of y's shape.
void add_n(Context& ctx, const std::vector<const Tensor*>& xs, Tensor& y);

// ---- channel concat / split (NCHW, along C) ----
void concat_channels(Context& ctx, const std::vector<const Tensor*>& xs, Tensor& y);
void split_channels(Context& ctx, const Tensor& y, const std::vector<Tensor*>& xs);
// Channel shuffle (ShuffleNet, PC-DARTS) of x (N, C, H, W) in `groups` groups (C divisible):
// y channel i * groups + j = x channel j * (C / groups) + i. Its inverse is the shuffle in
// C / groups groups.
void channel_shuffle(Context& ctx, const Tensor& x, int groups, Tensor& y);

// ---- loss ----
// logits (N, K), labels i32 (N) in [0, K): loss (1) = mean cross-entropy,
// dlogits (N, K) = (softmax - onehot) / N, correct (1) = number of argmax hits.
void softmax_xent(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& loss,
                  Tensor& dlogits, Tensor& correct);

// ---- random numbers (Philox4x32-10; element i uses word i of the stream (seed, offset)) ----
void random_words(Context& ctx, Tensor& out, uint64_t seed, uint64_t offset);  // i32 bits
void random_uniform(Context& ctx, Tensor& out, uint64_t seed, uint64_t offset, float low,
                    float high);

// ---- spatial crop: y (N, C, h, w) = x[:, :, top : top + h, left : left + w] ----
void crop2d_fwd(Context& ctx, const Tensor& x, int top, int left, Tensor& y);
// dx = 0 outside the window, dy inside (=).
void crop2d_bwd(Context& ctx, const Tensor& dy, int top, int left, Tensor& dx);

// ---- per-sample scaling (drop-path) ----
// y[n] = scales[n] * x[n] for x (N, ...), scales (N).
void scale_samples(Context& ctx, const Tensor& x, const Tensor& scales, Tensor& y);
// out[n] = 1 / keep_prob with probability keep_prob, else 0 (u = Philox word n of the stream).
void bernoulli_scale(Context& ctx, Tensor& out, float keep_prob, uint64_t seed, uint64_t offset);

// ---- data augmentation, see AugmentParams; y has x's shape ----
void augment(Context& ctx, const Tensor& x, Tensor& y, const AugmentParams& p, uint64_t seed,
             uint64_t offset);

// ---- gather: dst[i] = src[index[i]] (src, dst f32; index i32) ----
void gather(Context& ctx, const Tensor& src, const Tensor& index, Tensor& dst);

// ---- MixedOp kernels (K candidates; small vectors live on the device) ----
// probs (K) = softmax(logits (K)).
void softmax(Context& ctx, const Tensor& logits, Tensor& probs);
// softmax of every pair (logits[i], probs[i]) in one call, each as softmax computes it (a
// search model's alphas at the start of a pass). The probs must not overlap each other or
// any logits.
void softmax_many(Context& ctx, const std::vector<const Tensor*>& logits,
                  const std::vector<Tensor*>& probs);
// In the three mix ops a null entry of a candidate list stands for an exact zero tensor (a
// Zero candidate): it is neither read nor written.
// Softmax-gated mixing: y = sum_i weights[i] * xs[i] (weights (K) on the device), float
// accumulation in candidate order; y = 0 when every entry is null.
void mix_fwd(Context& ctx, const Tensor& weights, const std::vector<const Tensor*>& xs, Tensor& y);
// The mix's backward to every candidate in one pass over dy: dxs[i] = weights[i] * dy (=).
void mix_bwd(Context& ctx, const Tensor& weights, const Tensor& dy,
             const std::vector<Tensor*>& dxs);
// Scores: g[i] = <dy, xs[i]> for every i, in one pass over dy and the xs (g (K), =; 0 for a
// null entry).
void mix_scores(Context& ctx, const Tensor& dy, const std::vector<const Tensor*>& xs, Tensor& g);
// mix_bwd and mix_scores in one pass over dy (the weighted sum's backward fused with the scores
// the alpha gradient needs): dxs[i] = weights[i] dy (=), g[i] = <dy, xs[i]> (=). xs and dxs
// have K entries each; a null xs entry scores 0, a null dxs entry is not written.
void mix_bwd_scores(Context& ctx, const Tensor& weights, const Tensor& dy,
                    const std::vector<const Tensor*>& xs, const std::vector<Tensor*>& dxs,
                    Tensor& g);
// ---- an edge's normalised mix (docs/DESIGN.md section 6, "Fusions as built") ----
// The candidates of an edge whose outputs are affine-free training-mode BatchNorms: their
// statistics in one op, the normalisation inside the mix, the BatchNorm backward inside the
// mix's backward, so no candidate's normalised output is written or read. In the three ops
// xs[i] is candidate i's output t_i when !normed[i], and its value before the BatchNorm, z_i,
// when normed[i]: then t_i = z_i * invstd[i, c] - mean[i, c] * invstd[i, c] per channel c,
// batchnorm_fwd_train's output for the statistics in row i of mean and invstd (K, C). A null
// entry is an exact zero (never normed); all entries have one shape (N, C, H, W).
// Statistics of every normed entry at once, as batchnorm_fwd_train computes them: rows i of
// mean and invstd (=; mean 0 and invstd 1 in the other rows); running_means[i] and
// running_vars[i] move as batchnorm_fwd_train moves them when the two lists are given (K
// entries each, non-null where normed; empty lists: Probe, nothing updated).
void batchnorm_stats(Context& ctx, const std::vector<const Tensor*>& xs,
                     const std::vector<bool>& normed, Tensor& mean, Tensor& invstd,
                     const std::vector<Tensor*>& running_means,
                     const std::vector<Tensor*>& running_vars, const BatchNormParams& p);
// y = sum_i weights[i] t_i (=), float accumulation in candidate order: mix_fwd of the t_i.
void mix_norm_fwd(Context& ctx, const Tensor& weights, const std::vector<const Tensor*>& xs,
                  const std::vector<bool>& normed, const Tensor& mean, const Tensor& invstd,
                  Tensor& y);
// mix_norm_fwd's backward to every candidate: dxs[i] = weights[i] dy where !normed[i], and
// batchnorm_bwd (affine-free, the statistics of row i) of weights[i] dy where normed[i] (=; a
// null entry is not written); with g, the scores g[i] = <dy, t_i> (=, K; 0 for a null xs
// entry). The same numbers as mix_bwd_scores (or mix_bwd) then each normed candidate's
// batchnorm_bwd. The dxs must not share storage with dy, the xs or each other.
void mix_norm_bwd(Context& ctx, const Tensor& weights, const Tensor& dy,
                  const std::vector<const Tensor*>& xs, const std::vector<bool>& normed,
                  const Tensor& mean, const Tensor& invstd, const std::vector<Tensor*>& dxs,
                  Tensor* g);
// Architecture gradient through the softmax: dalpha += p * (g - <p, g>) with p = softmax(alpha).
// With a ranking (K, i32) and restrict_k > 0, the softmax is restricted to the set
// E = ranking[0 .. restrict_k) and dalpha is untouched outside E (ProxylessNAS).
void arch_grad(Context& ctx, const Tensor& alpha, const Tensor& g, const Tensor* ranking,
               int restrict_k, Tensor& dalpha);
// arch_grad (no ranking) of every row (alphas[i], gs[i], dalphas[i]) in one call, each as
// arch_grad computes it, applied in list order: rows that share a dalpha (MixedOps sharing an
// alpha) add to it in that order. Two dalphas are the same tensor view or do not overlap.
void arch_grad_many(Context& ctx, const std::vector<const Tensor*>& alphas,
                    const std::vector<const Tensor*>& gs, const std::vector<Tensor*>& dalphas);
// Gumbel top-k for many MixedOps in one call. Segment s holds logits[offsets[s] ..
// offsets[s+1]); ranking gets, per segment, the local indices sorted by
// logit + Gumbel noise, descending (the first k are k draws without replacement from the
// softmax). Noise for element j uses Philox word j of (seed, offset).
void gumbel_rank(Context& ctx, const Tensor& logits, const Tensor& offsets, uint64_t seed,
                 uint64_t offset, Tensor& ranking);
// GDAS's soft sample of one MixedOp: soft (K) = softmax((log_softmax(logits) + G) / tau) with
// the Gumbel noise gumbel_rank uses, G_i = -log(-log u), u = Philox word (first + i) of
// (seed, offset): the argmax of soft is the first entry of gumbel_rank's ranking of the same
// draw (logits being segment [first, first + K) of what it ranked). tau > 0.
void gumbel_softmax(Context& ctx, const Tensor& logits, uint64_t seed, uint64_t offset,
                    int64_t first, float tau, Tensor& soft);
// Its backward: dlogits (K) += the gradient of L through soft, given dsoft (K) = dL/dsoft:
// dz = soft * (dsoft - <soft, dsoft>), v = dz / tau, dlogits += v - softmax(logits) sum(v).
void gumbel_softmax_bwd(Context& ctx, const Tensor& logits, const Tensor& soft, const Tensor& dsoft,
                        float tau, Tensor& dlogits);
// out (S...) = scale * sum over the batch of x (N, S...).
void batch_sum(Context& ctx, const Tensor& x, float scale, Tensor& out);
// Moving-average estimates (K, S): for i in E = ranking[0 .. k_eval):
//   m[i] += lr (mu[i] - m[i]); estimate = mu[i];  otherwise estimate = m[i].
// g[i] = <dy_sum, estimate_i> for all K (=). mu rows outside E are not read.
void ma_update_scores(Context& ctx, const Tensor& dy_sum, const Tensor& mu, Tensor& m,
                      const Tensor& ranking, int k_eval, float lr, Tensor& g);
// out (1) = log sum_{i in E} exp alpha[i], E = ranking[0 .. k).
void masked_logsumexp(Context& ctx, const Tensor& alpha, const Tensor& ranking, int k, Tensor& out);
// ProxylessNAS rescale: alpha[i] += lse_old - log sum_E exp alpha, for i in E.
void proxyless_rescale(Context& ctx, Tensor& alpha, const Tensor& ranking, int k,
                       const Tensor& lse_old);
// The same over a set given as a mask (K, f32; entries != 0 are in the set), so that several
// MixedOps sharing one alpha can contribute their sets: mark_ranked sets mask[ranking[j]] = 1
// for j < k (other entries untouched); mask_logsumexp: out (1) = log sum_{mask} exp alpha (-inf
// for an empty set); mask_rescale: alpha[i] += lse_old - log sum_{mask} exp alpha where
// mask[i] != 0 (nothing for an empty set).
void mark_ranked(Context& ctx, const Tensor& ranking, int k, Tensor& mask);
void mask_logsumexp(Context& ctx, const Tensor& alpha, const Tensor& mask, Tensor& out);
void mask_rescale(Context& ctx, Tensor& alpha, const Tensor& mask, const Tensor& lse_old);

// t's first words.size() 32-bit words (at most 8; f32 bit patterns or i32) = words. The
// values travel as kernel arguments, not through an upload buffer: safe to call while
// earlier work is queued and between graph replays (the optimizers' per-step values).
void set_words(Context& ctx, Tensor& t, const std::vector<uint32_t>& words);

// ---- optimizers: one call updates a whole group of tensors ----
// grad_scale (optional, (1) on the device) multiplies every gradient first (clipping); a
// grad_scale of exactly 0 skips the update (parameters and state unchanged): the coefficient
// clip_coefficient gives a non-finite gradient norm.
// hyper (optional, on the device) replaces the host values that change from step to step,
// so a captured graph can run many steps: SGD reads lr = hyper[0]; Adam reads lr = hyper[0]
// and the bias corrections 1 - beta1^step = hyper[1], 1 - beta2^step = hyper[2] (p.step is
// then ignored). adam_hyper() gives the values the host path would use.
// SGD (PyTorch semantics): d = g + wd p; buf = m buf + d; d = nesterov ? d + m buf : buf
// (plain d when m = 0); p -= lr d. state0 is the momentum buffer (needed when m > 0).
void sgd_step(Context& ctx, const std::vector<OptimSlot>& slots, const SgdParams& p,
              const Tensor* grad_scale = nullptr, const Tensor* hyper = nullptr);
// Adam / AdamW (PyTorch semantics); state0 = first moment, state1 = second moment.
void adam_step(Context& ctx, const std::vector<OptimSlot>& slots, const AdamParams& p,
               const Tensor* grad_scale = nullptr, const Tensor* hyper = nullptr);
// {lr, 1 - beta1^step, 1 - beta2^step} as adam_step computes them from p.
std::array<float, 3> adam_hyper(const AdamParams& p);
// out (1) = sqrt(sum of squares of every tensor).
void global_norm(Context& ctx, const std::vector<const Tensor*>& xs, Tensor& out);
// coef (1) = min(1, max_norm / (norm + 1e-6)), computed on the device (no host read); 0 when
// the norm is not finite (the optimizers then skip the step). max_norm may be +inf (no
// clipping, only the non-finite check).
void clip_coefficient(Context& ctx, const Tensor& norm, float max_norm, Tensor& coef);

// The divergence watch of one training step, on the device (no host read): state (4, i32) =
// {calls, first call with a non-finite value or -1, calls with one, index in `values` of the
// first call's first non-finite value or -1}; each call counts itself and looks at the first
// element of each of the (at most 8) values: losses, gradient norms. Start state at
// {0, -1, 0, -1}.
void count_nonfinite(Context& ctx, const std::vector<const Tensor*>& values, Tensor& state);

// A training step's metrics into running sums (4) = {sum of batch * loss, sum of hits,
// samples, steps skipped}: a step whose loss (1) is not finite adds only to the skipped count.
void metrics_add(Context& ctx, const Tensor& loss, const Tensor& hits, float batch, Tensor& sums);

}  // namespace ops
}  // namespace cudarts
