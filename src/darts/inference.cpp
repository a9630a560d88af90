// Inference with a retrained network (include/cudarts/inference.h).
#include "cudarts/inference.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cudarts/checkpoint.h"
#include "cudarts/error.h"
#include "cudarts/nb201.h"
#include "cudarts/ops.h"

namespace cudarts::darts {

using json = nlohmann::json;

Classifier::Classifier(Context& ctx, const std::string& run_dir, int64_t in_channels,
                       int num_classes) {
  const std::string path = (std::filesystem::path(run_dir) / "checkpoint.safetensors").string();
  CUDARTS_INPUT_CHECK(std::filesystem::exists(path), "Classifier: no checkpoint '", path,
                      "' (a darts_train --out folder holds one)");
  std::map<std::string, std::string> md;
  const TensorMap tensors = load_safetensors(path, &md, true);
  json config;
  try {
    config = json::parse(md.at("cudarts")).at("config");
    const std::string space = config.value("space", "darts");
    const int64_t channels = config.at("channels").get<int64_t>();
    const int cells = config.at("cells").get<int>();
    const bool auxiliary = config.at("auxiliary").get<bool>();
    architecture_ = config.at("genotype").dump(2);
    if (space == "nb201") {
      nb201::Config c;
      c.channels = channels;
      c.cells_per_stage = cells;
      c.in_channels = in_channels;
      c.num_classes = num_classes;
      const nb201::Arch arch = nb201::Arch::parse(config.at("genotype").at("nb201"));
      net_ = std::make_unique<nb201::Network>(ctx, "net", c, &arch);
    } else {
      EvalConfig c;
      c.channels = channels;
      c.cells = cells;
      c.auxiliary = auxiliary;
      c.in_channels = in_channels;
      c.num_classes = num_classes;
      net_ = std::make_unique<EvalNetwork>(ctx, "net", Genotype::from_json(architecture_), c);
    }
    side_ = auxiliary ? 32 : 0;  // darts_train pads to at least 32 for the auxiliary head
  } catch (const Error& e) {
    throw InputError(detail::cat("Classifier: '", path, "': ", e.what()));
  } catch (const std::exception& e) {
    CUDARTS_INPUT_FAIL("Classifier: '", path, "' is not a darts_train checkpoint (", e.what(), ")");
  }
  auto restore = [&](const std::string& key, Tensor& t) {
    const auto it = tensors.find(key);
    CUDARTS_INPUT_CHECK(it != tensors.end(), "Classifier: '", path, "' has no tensor '", key,
                        "' (in_channels ", in_channels, " and num_classes ", num_classes,
                        " must be the run's)");
    try {
      copy_from_host(ctx, it->second, t, "Classifier: '" + path + "' tensor '" + key + "'");
    } catch (const InputError&) {
      throw;
    } catch (const Error& e) {  // a shape that does not fit: the file or the arguments
      throw InputError(detail::cat(e.what(), " (in_channels ", in_channels, ", num_classes ",
                                   num_classes, ": must be the run's)"));
    }
  };
  for (auto& [name, p] : net_->named_parameters())
    if (p->kind == ParamKind::Operational) restore("param/" + name, p->value);
  for (auto& [name, b] : net_->named_buffers()) restore("buffer/" + name, *b);
}

Classifier::~Classifier() = default;

Dataset Classifier::prepare(const Dataset& d) const {
  const int64_t side = std::max<int64_t>(side_, (std::max(d.h, d.w) + 3) / 4 * 4);
  return d.padded(side, d.background);
}

void Classifier::set_use_graph(bool on) {
  use_graph_ = on;
  if (!on) graph_.reset();
}

Tensor Classifier::logits(Context& ctx, const Tensor& images) {
  if (!use_graph_ || (graph_ && images.shape() != static_in_.shape()))
    return net_->forward(ctx, images, Mode::Eval);
  if (!graph_) {  // one eager pass first (algorithm choice, caches), then the capture
    net_->forward(ctx, images, Mode::Eval);
    static_in_ = Tensor::empty(ctx, images.shape());
    static_out_ = Tensor::empty(ctx, net_->output_shape(images.shape()));
    graph_ = std::make_unique<StepGraph>(ctx);
    graph_->capture([&] {
      Tensor y = net_->forward(ctx, static_in_, Mode::Eval);
      ops::copy(ctx, y, static_out_);
    });
  }
  ops::copy(ctx, images, static_in_);
  graph_->replay();
  Tensor out = Tensor::empty(ctx, static_out_.shape());
  ops::copy(ctx, static_out_, out);
  return out;
}

}  // namespace cudarts::darts
