// ONNX export of a layer graph in inference mode (issue 11 item 3; docs/DESIGN.md section 12).
// Every built-in layer writes its own ONNX nodes (Layer::to_onnx), so any network built from
// supported layers exports: Conv2d, BatchNorm2d, ReLU, max and average pooling, Linear,
// Identity, Zero, GlobalAvgPool, Flatten, Sequential, Graph, FactorizedReduce, DropPath and the
// retraining networks (darts::EvalNetwork without its auxiliary head, nb201::Network). Search
// layers (MixedOps and their wrappers) have no ONNX form and are refused with an Error naming
// the layer. The file is written without any ONNX library: cudarts encodes the protobuf itself.
//
// What the file holds: opset 17 of the default domain (IR version 8); float32 weights embedded
// as initializers; BatchNorm in its inference form (running statistics), folded into the
// convolution before it where that convolution feeds nothing else (fold_batchnorm), otherwise
// an ONNX BatchNormalization; one input "input" (N, C, H, W) with a symbolic batch size and one
// output "logits". The input is what the network sees: images normalised and padded as the run
// trained on them (darts::Classifier::prepare).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cudarts/layer.h"
#include "cudarts/shape.h"

namespace cudarts::onnx {

constexpr int kOpset = 17;
constexpr int kIrVersion = 8;

struct ExportOptions {
  bool fold_batchnorm = true;  // BatchNorm after a convolution folded into its weights and bias
  bool dynamic_batch = true;   // the batch dimension is the symbol "N" (else the export's N)
  std::string graph_name = "cudarts";
  std::string doc;                              // the model's doc_string
  std::map<std::string, std::string> metadata;  // metadata_props, e.g. the architecture
};

// An attribute of an ONNX node.
struct Attribute {
  enum class Kind { Int, Ints, Float, Tensor };
  std::string name;
  Kind kind = Kind::Int;
  int64_t i = 0;
  std::vector<int64_t> ints;
  float f = 0.0f;
  std::vector<float> tensor;  // Kind::Tensor: a float tensor of shape {tensor.size()}
  static Attribute of(const std::string& name, int64_t v);
  static Attribute of(const std::string& name, std::vector<int64_t> v);
  static Attribute of_float(const std::string& name, float v);
  static Attribute of_tensor(const std::string& name, std::vector<float> v);
};

// The graph being written. Layers add their nodes and weights through it; names are scoped by
// the layer path (Layer::to_onnx pushes the layer's name), so initializers read like the
// checkpoint's tensors ("net.cell3.op2.dw1.weight").
class GraphBuilder {
 public:
  struct Node {
    std::string op_type, name;
    std::vector<std::string> inputs, outputs;
    std::vector<Attribute> attributes;
  };
  struct Initializer {
    std::string name;
    std::vector<int64_t> dims;
    bool int64 = false;
    std::vector<float> f32;
    std::vector<int64_t> i64;
  };

  // A node with one output; returns the output's name (the scope path, made unique).
  std::string node(const std::string& op_type, std::vector<std::string> inputs,
                   std::vector<Attribute> attributes = {});
  // Initializers: a tensor's values (read to the host), host floats, a 1-D int64 vector.
  std::string weight(const std::string& local_name, const Tensor& t);
  std::string constant(const std::string& local_name, std::vector<int64_t> dims,
                       std::vector<float> values);
  std::string constant_i64(const std::string& local_name, std::vector<int64_t> values);

  // RAII: names inside it are prefixed by `part`.
  class Scope {
   public:
    Scope(GraphBuilder& g, const std::string& part);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    GraphBuilder& g_;
  };

  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }
  std::vector<Initializer>& initializers() { return initializers_; }
  Initializer* find_initializer(const std::string& name);

 private:
  std::string scoped(const std::string& local) const;
  std::string unique(const std::string& base);

  std::vector<std::string> scope_;
  std::vector<Node> nodes_;
  std::vector<Initializer> initializers_;
  std::map<std::string, int> used_;
};

// The serialized ModelProto of `net` for inputs of `input_shape` (N, C, H, W), in inference
// mode. Error naming the layer when one has no ONNX form, or when the input does not fit.
std::string export_model(Layer& net, const Shape& input_shape, const ExportOptions& options = {});
// The same, written atomically to `path` (an existing file survives any failure); InputError
// naming the path when it cannot be written.
void export_model_file(Layer& net, const Shape& input_shape, const std::string& path,
                       const ExportOptions& options = {});

// Folds each BatchNormalization whose input is a Conv output used by nothing else into that
// convolution's weight and bias (computed in double). Returns the number folded. Exposed for
// tests; export_model calls it when options.fold_batchnorm.
int fold_batchnorm(GraphBuilder& g, const std::vector<std::string>& graph_outputs);

}  // namespace cudarts::onnx
