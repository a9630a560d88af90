// Ops the CUDA backend does not implement yet: each says so (NotSupported) instead of
// falling back to the CPU. The op-parity test reports these as skipped.
#include "cuda_backend.h"

namespace cudarts::cuda {

#define CUDARTS_CUDA_TODO(op) \
  throw NotSupported(std::string("cuda backend: ") + op + " is not implemented yet")

void CudaBackend::conv2d_fwd(const Tensor&, const Tensor&, const Tensor*, Tensor&,
                             const Conv2dParams&) {
  CUDARTS_CUDA_TODO("conv2d_fwd");
}
void CudaBackend::conv2d_bwd_data(const Tensor&, const Tensor&, Tensor&, const Conv2dParams&) {
  CUDARTS_CUDA_TODO("conv2d_bwd_data");
}
void CudaBackend::conv2d_bwd_filter(const Tensor&, const Tensor&, Tensor&, Tensor*,
                                    const Conv2dParams&) {
  CUDARTS_CUDA_TODO("conv2d_bwd_filter");
}
void CudaBackend::batchnorm_fwd_train(const Tensor&, const Tensor*, const Tensor*, Tensor*, Tensor*,
                                      Tensor&, Tensor&, Tensor&, const BatchNormParams&) {
  CUDARTS_CUDA_TODO("batchnorm_fwd_train");
}
void CudaBackend::batchnorm_fwd_infer(const Tensor&, const Tensor*, const Tensor*, const Tensor&,
                                      const Tensor&, Tensor&, float) {
  CUDARTS_CUDA_TODO("batchnorm_fwd_infer");
}
void CudaBackend::batchnorm_bwd(const Tensor&, const Tensor&, const Tensor*, const Tensor&,
                                const Tensor&, Tensor&, Tensor*, Tensor*) {
  CUDARTS_CUDA_TODO("batchnorm_bwd");
}
void CudaBackend::pool2d_fwd(const Tensor&, Tensor&, const Pool2dParams&) {
  CUDARTS_CUDA_TODO("pool2d_fwd");
}
void CudaBackend::pool2d_bwd(const Tensor&, const Tensor&, const Tensor&, Tensor&,
                             const Pool2dParams&) {
  CUDARTS_CUDA_TODO("pool2d_bwd");
}
void CudaBackend::global_avgpool_fwd(const Tensor&, Tensor&) {
  CUDARTS_CUDA_TODO("global_avgpool_fwd");
}
void CudaBackend::global_avgpool_bwd(const Tensor&, Tensor&) {
  CUDARTS_CUDA_TODO("global_avgpool_bwd");
}
void CudaBackend::linear_fwd(const Tensor&, const Tensor&, const Tensor*, Tensor&) {
  CUDARTS_CUDA_TODO("linear_fwd");
}
void CudaBackend::linear_bwd_data(const Tensor&, const Tensor&, Tensor&) {
  CUDARTS_CUDA_TODO("linear_bwd_data");
}
void CudaBackend::linear_bwd_weight(const Tensor&, const Tensor&, Tensor&, Tensor*) {
  CUDARTS_CUDA_TODO("linear_bwd_weight");
}
void CudaBackend::concat_channels(const std::vector<const Tensor*>&, Tensor&) {
  CUDARTS_CUDA_TODO("concat_channels");
}
void CudaBackend::split_channels(const Tensor&, const std::vector<Tensor*>&) {
  CUDARTS_CUDA_TODO("split_channels");
}
void CudaBackend::softmax_xent(const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&) {
  CUDARTS_CUDA_TODO("softmax_xent");
}
void CudaBackend::softmax(const Tensor&, Tensor&) { CUDARTS_CUDA_TODO("softmax"); }
void CudaBackend::mix_fwd(const Tensor&, const std::vector<const Tensor*>&, Tensor&) {
  CUDARTS_CUDA_TODO("mix_fwd");
}
void CudaBackend::mix_scores(const Tensor&, const std::vector<const Tensor*>&, Tensor&) {
  CUDARTS_CUDA_TODO("mix_scores");
}
void CudaBackend::arch_grad(const Tensor&, const Tensor&, const Tensor*, int, Tensor&) {
  CUDARTS_CUDA_TODO("arch_grad");
}
void CudaBackend::gumbel_rank(const Tensor&, const Tensor&, uint64_t, uint64_t, Tensor&) {
  CUDARTS_CUDA_TODO("gumbel_rank");
}
void CudaBackend::batch_sum(const Tensor&, float, Tensor&) { CUDARTS_CUDA_TODO("batch_sum"); }
void CudaBackend::ma_update_scores(const Tensor&, const Tensor&, Tensor&, const Tensor&, int,
                                   float, Tensor&) {
  CUDARTS_CUDA_TODO("ma_update_scores");
}
void CudaBackend::masked_logsumexp(const Tensor&, const Tensor&, int, Tensor&) {
  CUDARTS_CUDA_TODO("masked_logsumexp");
}
void CudaBackend::proxyless_rescale(Tensor&, const Tensor&, int, const Tensor&) {
  CUDARTS_CUDA_TODO("proxyless_rescale");
}
void CudaBackend::sgd_step(const std::vector<OptimSlot>&, const SgdParams&, const Tensor*) {
  CUDARTS_CUDA_TODO("sgd_step");
}
void CudaBackend::adam_step(const std::vector<OptimSlot>&, const AdamParams&, const Tensor*) {
  CUDARTS_CUDA_TODO("adam_step");
}
void CudaBackend::global_norm(const std::vector<const Tensor*>&, Tensor&) {
  CUDARTS_CUDA_TODO("global_norm");
}
void CudaBackend::clip_coefficient(const Tensor&, float, Tensor&) {
  CUDARTS_CUDA_TODO("clip_coefficient");
}

}  // namespace cudarts::cuda
