// Containers: Sequential (a chain) and Graph (a DAG of layers with named values).
// Graph: values are named; a node is a layer applied to one value, a sum of values or a
// channel concatenation of values. Forward runs in topological order and releases
// values after their last use; backward runs in reverse and sums the gradients of
// values that fan out.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cudarts/layer.h"

namespace cudarts {

class Sequential final : public Layer {
 public:
  explicit Sequential(std::string name);
  const char* type() const override { return "Sequential"; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;

  // Appends a layer and returns it (typed), e.g. auto& c = seq.add<Conv2d>(ctx, "c", 3, 8, 3);
  Layer& add(std::unique_ptr<Layer> layer);
  template <class L, class... Args>
  L& emplace(Args&&... args) {
    auto layer = std::make_unique<L>(std::forward<Args>(args)...);
    L& ref = *layer;
    add(std::move(layer));
    return ref;
  }
  size_t size() const { return layers_.size(); }
  Layer& operator[](size_t i) { return *layers_.at(i); }
  // The last layer's trailing norm.
  BatchNorm2d* trailing_norm() override;
  // The first layer's leading convolution.
  Conv2d* leading_conv() override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  // The first layer after its leading convolution, the last one to its norm.
  Tensor forward_partial_impl(Context& ctx, const Tensor& x, Mode mode,
                              const PartialPass& pass) override;
  Tensor backward_partial_impl(Context& ctx, const Tensor& dz) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override;

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
};

class Graph final : public Layer {
 public:
  // `inputs` names the graph's input values, in the order forward_many receives them.
  explicit Graph(std::string name, std::vector<std::string> inputs = {"input"});
  const char* type() const override { return "Graph"; }
  Shape output_shape(const Shape& x) const override;
  Shape output_shape_of(const std::vector<Shape>& inputs) const;
  std::vector<Layer*> children() const override;

  // Adds a node named after the layer, computing layer(value `input`).
  Layer& add(std::unique_ptr<Layer> layer, const std::string& input);
  template <class L, class... Args>
  L& emplace(const std::string& input, Args&&... args) {
    auto layer = std::make_unique<L>(std::forward<Args>(args)...);
    L& ref = *layer;
    add(std::move(layer), input);
    return ref;
  }
  void add_sum(const std::string& node, const std::vector<std::string>& inputs);
  void add_concat(const std::string& node, const std::vector<std::string>& inputs);
  void set_output(const std::string& value);

  // Several inputs (in the order given at construction); returns the output value.
  Tensor forward_many(Context& ctx, const std::vector<const Tensor*>& inputs, Mode mode);
  // Gradients with respect to each input (after forward_many in Mode::Train).
  std::vector<Tensor> backward_many(Context& ctx, const Tensor& dy);
  // The ONNX nodes of the graph reading the named values (one per graph input, in order), in a
  // scope named after the graph; returns the output value's name.
  std::string to_onnx_many(onnx::GraphBuilder& g, const std::vector<std::string>& inputs);

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override;

 private:
  enum class Kind { Layer, Sum, Concat };
  struct Node {
    std::string name;
    Kind kind;
    std::unique_ptr<cudarts::Layer> layer;
    std::vector<std::string> inputs;
    std::vector<int64_t> concat_channels;  // filled by forward (for backward's split)
  };
  void check_new_node(const std::string& node, const std::vector<std::string>& inputs) const;
  const std::vector<size_t>& order() const;  // topological order of nodes_
  std::string onnx_body(onnx::GraphBuilder& g, const std::vector<std::string>& inputs);

  std::vector<std::string> inputs_;
  std::string output_;
  std::vector<Node> nodes_;
  mutable std::vector<size_t> order_;
  mutable bool order_valid_ = false;
  bool awaiting_ = false;
  std::vector<Shape> last_input_shapes_;
};

}  // namespace cudarts
