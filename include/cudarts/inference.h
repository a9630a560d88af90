// Shipping a found network (issue 11 item 4): a network retrained by darts_train loaded for
// batched inference on a Context (the application's CUDA stream: ContextOptions), eagerly or
// by replaying a captured CUDA graph.
#pragma once

#include <memory>
#include <string>

#include "cudarts/darts.h"
#include "cudarts/data.h"
#include "cudarts/step_graph.h"

namespace cudarts::darts {

class Classifier {
 public:
  // run_dir: a darts_train --out folder. Its checkpoint.safetensors (checksums verified) gives
  // the weights, BatchNorm statistics and the run's configuration (space, genotype, channels,
  // cells, auxiliary head); in_channels and num_classes are those of the images to classify.
  // InputError naming the file when something is missing or does not fit.
  Classifier(Context& ctx, const std::string& run_dir, int64_t in_channels, int num_classes);
  ~Classifier();
  // The images as the run trained on them (zero-padded to the side it used).
  Dataset prepare(const Dataset& images) const;
  // Logits (N, classes) of images (N, C, H, W) in inference mode. With use_graph, batches of
  // the shape of the first call replay a StepGraph captured then (the others run eagerly); the
  // logits are the same bit for bit either way.
  Tensor logits(Context& ctx, const Tensor& images);
  void set_use_graph(bool on);
  RetrainNetwork& network() { return *net_; }
  const std::string& architecture() const { return architecture_; }  // genotype JSON

 private:
  std::unique_ptr<RetrainNetwork> net_;
  std::string architecture_;
  int64_t side_ = 0;
  bool use_graph_ = false;
  std::unique_ptr<StepGraph> graph_;
  Tensor static_in_, static_out_;
};

}  // namespace cudarts::darts
