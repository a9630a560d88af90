// The op table's one list of names (internal). Every function of include/cudarts/ops.h that
// runs on a backend appears here once; ops::op_names() returns the list, the op-parity test
// requires cases for each entry and checks the list against the header, and the op front
// door labels its profiler/NVTX ranges with these names.
#pragma once

#define CUDARTS_OP_LIST(X)      \
  X(set_words)                  \
  X(fill)                       \
  X(copy)                       \
  X(conv2d_fwd)                 \
  X(conv2d_bwd_data)            \
  X(conv2d_bwd_filter)          \
  X(depthwise_group_fwd)        \
  X(depthwise_group_bwd_data)   \
  X(depthwise_group_bwd_filter) \
  X(batchnorm_fwd_train)        \
  X(batchnorm_fwd_infer)        \
  X(batchnorm_bwd)              \
  X(batchnorm_moments)          \
  X(batchnorm_moments_finish)   \
  X(batchnorm_bwd_sums)         \
  X(batchnorm_bwd_apply)        \
  X(relu_fwd)                   \
  X(relu_bwd)                   \
  X(pool2d_fwd)                 \
  X(pool2d_bwd)                 \
  X(global_avgpool_fwd)         \
  X(global_avgpool_bwd)         \
  X(linear_fwd)                 \
  X(linear_bwd_data)            \
  X(linear_bwd_weight)          \
  X(add)                        \
  X(scale)                      \
  X(axpy)                       \
  X(add_n)                      \
  X(concat_channels)            \
  X(split_channels)             \
  X(channel_shuffle)            \
  X(softmax_xent)               \
  X(random_words)               \
  X(random_uniform)             \
  X(crop2d_fwd)                 \
  X(crop2d_bwd)                 \
  X(scale_samples)              \
  X(bernoulli_scale)            \
  X(augment)                    \
  X(gather)                     \
  X(softmax)                    \
  X(softmax_many)               \
  X(mix_fwd)                    \
  X(mix_bwd)                    \
  X(mix_scores)                 \
  X(mix_bwd_scores)             \
  X(batchnorm_stats)            \
  X(mix_norm_fwd)               \
  X(mix_norm_bwd)               \
  X(arch_grad)                  \
  X(arch_grad_many)             \
  X(gumbel_rank)                \
  X(gumbel_softmax)             \
  X(gumbel_softmax_bwd)         \
  X(batch_sum)                  \
  X(ma_update_scores)           \
  X(masked_logsumexp)           \
  X(proxyless_rescale)          \
  X(mark_ranked)                \
  X(mask_logsumexp)             \
  X(mask_rescale)               \
  X(sgd_step)                   \
  X(adam_step)                  \
  X(global_norm)                \
  X(clip_coefficient)           \
  X(count_nonfinite)            \
  X(metrics_add)
