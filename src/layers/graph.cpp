// Sequential and Graph containers.
#include "cudarts/graph.h"

#include <algorithm>
#include <set>

#include "cudarts/error.h"
#include "cudarts/onnx.h"
#include "cudarts/ops.h"
#include "grad_sum.h"

namespace cudarts {

// ---------------------------------------------------------------- Sequential
Sequential::Sequential(std::string name) : Layer(std::move(name)) {}

Layer& Sequential::add(std::unique_ptr<Layer> layer) {
  CUDARTS_CHECK(layer, label(), ": add() got a null layer");
  for (auto& l : layers_)
    CUDARTS_CHECK(l->name() != layer->name(), label(), ": a layer named '", layer->name(),
                  "' is already present");
  layers_.push_back(std::move(layer));
  return *layers_.back();
}

std::vector<Layer*> Sequential::children() const {
  std::vector<Layer*> out;
  for (auto& l : layers_) out.push_back(l.get());
  return out;
}

Shape Sequential::output_shape(const Shape& x) const {
  Shape s = x;
  for (auto& l : layers_) s = l->output_shape(s);
  return s;
}

Tensor Sequential::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor h = x.share();
  for (auto& l : layers_) h = l->forward(ctx, h, mode);
  return h;
}

Tensor Sequential::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor g = dy.share();
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) g = (*it)->backward(ctx, g);
  return g;
}

BatchNorm2d* Sequential::trailing_norm() {
  return layers_.empty() ? nullptr : layers_.back()->trailing_norm();
}

Conv2d* Sequential::leading_conv() {
  return layers_.empty() ? nullptr : layers_.front()->leading_conv();
}

Tensor Sequential::forward_partial_impl(Context& ctx, const Tensor& x, Mode mode,
                                        const PartialPass& pass) {
  const size_t n = layers_.size();
  if (n == 1) return layers_[0]->forward_partial(ctx, x, mode, pass);
  Tensor h = pass.lead
                 ? layers_[0]->forward_partial(ctx, x, mode, {false, pass.lead, pass.lead_grads})
                 : layers_[0]->forward(ctx, x, mode);
  for (size_t i = 1; i + 1 < n; ++i) h = layers_[i]->forward(ctx, h, mode);
  return pass.to_norm ? layers_.back()->forward_to_norm(ctx, h, mode)
                      : layers_.back()->forward(ctx, h, mode);
}

Tensor Sequential::backward_partial_impl(Context& ctx, const Tensor& dz) {
  const size_t n = layers_.size();
  if (n == 1) return layers_[0]->backward_partial(ctx, dz);
  Tensor g = held_to_norm() ? layers_.back()->backward_from_norm(ctx, dz)
                            : layers_.back()->backward(ctx, dz);
  for (size_t i = n - 1; i-- > 1;) g = layers_[i]->backward(ctx, g);
  return held_lead() ? layers_[0]->backward_partial(ctx, g) : layers_[0]->backward(ctx, g);
}

void Sequential::release_saved_impl() {}

// ---------------------------------------------------------------- Graph
Graph::Graph(std::string name, std::vector<std::string> inputs)
    : Layer(std::move(name)), inputs_(std::move(inputs)) {
  CUDARTS_CHECK(!inputs_.empty(), label(), ": a graph needs at least one input");
  std::set<std::string> seen;
  for (auto& i : inputs_)
    CUDARTS_CHECK(seen.insert(i).second, label(), ": input '", i, "' named twice");
}

void Graph::check_new_node(const std::string& node, const std::vector<std::string>& inputs) const {
  CUDARTS_CHECK(!node.empty(), label(), ": node names must be non-empty");
  CUDARTS_CHECK(!inputs.empty(), label(), ": node '", node, "' has no inputs");
  CUDARTS_CHECK(std::find(inputs_.begin(), inputs_.end(), node) == inputs_.end(), label(),
                ": node '", node, "' has the name of a graph input");
  for (auto& n : nodes_)
    CUDARTS_CHECK(n.name != node, label(), ": a node named '", node, "' is already present");
}

Layer& Graph::add(std::unique_ptr<Layer> layer, const std::string& input) {
  CUDARTS_CHECK(layer, label(), ": add() got a null layer");
  check_new_node(layer->name(), {input});
  Node n{layer->name(), Kind::Layer, std::move(layer), {input}, {}};
  nodes_.push_back(std::move(n));
  order_valid_ = false;
  return *nodes_.back().layer;
}

void Graph::add_sum(const std::string& node, const std::vector<std::string>& inputs) {
  check_new_node(node, inputs);
  nodes_.push_back(Node{node, Kind::Sum, nullptr, inputs, {}});
  order_valid_ = false;
}

void Graph::add_concat(const std::string& node, const std::vector<std::string>& inputs) {
  check_new_node(node, inputs);
  nodes_.push_back(Node{node, Kind::Concat, nullptr, inputs, {}});
  order_valid_ = false;
}

void Graph::set_output(const std::string& value) {
  output_ = value;
}

std::vector<Layer*> Graph::children() const {
  std::vector<Layer*> out;
  for (auto& n : nodes_)
    if (n.layer) out.push_back(n.layer.get());
  return out;
}

const std::vector<size_t>& Graph::order() const {
  if (order_valid_) return order_;
  std::set<std::string> known(inputs_.begin(), inputs_.end());
  std::set<std::string> all = known;
  for (auto& n : nodes_) all.insert(n.name);
  for (auto& n : nodes_)
    for (auto& in : n.inputs)
      CUDARTS_CHECK(all.count(in), label(), ": node '", n.name, "' reads '", in,
                    "', which is neither a graph input nor a node");
  CUDARTS_CHECK(!output_.empty(), label(), ": no output set (call set_output)");
  CUDARTS_CHECK(all.count(output_), label(), ": output '", output_,
                "' is neither a graph input nor a node");
  std::vector<size_t> order;
  std::vector<bool> done(nodes_.size(), false);
  bool progress = true;
  while (order.size() < nodes_.size() && progress) {
    progress = false;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (done[i]) continue;
      const bool ready = std::all_of(nodes_[i].inputs.begin(), nodes_[i].inputs.end(),
                                     [&](const std::string& s) { return known.count(s) > 0; });
      if (!ready) continue;
      done[i] = true;
      known.insert(nodes_[i].name);
      order.push_back(i);
      progress = true;
    }
  }
  if (order.size() < nodes_.size()) {
    std::string stuck;
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (!done[i]) stuck += (stuck.empty() ? "'" : ", '") + nodes_[i].name + "'";
    CUDARTS_FAIL(label(), ": the nodes ", stuck, " form a cycle");
  }
  order_ = std::move(order);
  order_valid_ = true;
  return order_;
}

Shape Graph::output_shape_of(const std::vector<Shape>& inputs) const {
  CUDARTS_CHECK(inputs.size() == inputs_.size(), label(), ": ", inputs.size(),
                " inputs given, the graph has ", inputs_.size());
  std::map<std::string, Shape> shapes;
  for (size_t i = 0; i < inputs.size(); ++i) shapes[inputs_[i]] = inputs[i];
  for (size_t idx : order()) {
    const Node& n = nodes_[idx];
    const Shape& first = shapes.at(n.inputs[0]);
    if (n.kind == Kind::Layer) {
      shapes[n.name] = n.layer->output_shape(first);
    } else if (n.kind == Kind::Sum) {
      for (size_t k = 1; k < n.inputs.size(); ++k)
        CUDARTS_CHECK(shapes.at(n.inputs[k]) == first, label(), ": sum node '", n.name, "' adds '",
                      n.inputs[0], "' of shape ", first, " and '", n.inputs[k], "' of shape ",
                      shapes.at(n.inputs[k]));
      shapes[n.name] = first;
    } else {
      int64_t c = 0;
      for (auto& in : n.inputs) {
        const Shape& s = shapes.at(in);
        CUDARTS_CHECK(s.ndim() == 4 && first.ndim() == 4 && s[0] == first[0] && s[2] == first[2] &&
                          s[3] == first[3],
                      label(), ": concat node '", n.name, "' joins '", n.inputs[0], "' of shape ",
                      first, " and '", in, "' of shape ", s, " (all but the channels must match)");
        c += s[1];
      }
      shapes[n.name] = Shape{first[0], c, first[2], first[3]};
    }
  }
  return shapes.at(output_);
}

Shape Graph::output_shape(const Shape& x) const {
  return output_shape_of({x});
}

Tensor Graph::forward_many(Context& ctx, const std::vector<const Tensor*>& inputs, Mode mode) {
  std::vector<Shape> shapes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    CUDARTS_CHECK(inputs[i] && inputs[i]->defined(), label(), ": input ", i, " is undefined");
    CUDARTS_CHECK(inputs[i]->device() == ctx.device(), label(), ": input '",
                  i < inputs_.size() ? inputs_[i] : "?", "' is ", inputs[i]->describe(),
                  " but the context is on ", ctx.device().str());
    shapes.push_back(inputs[i]->shape());
  }
  output_shape_of(shapes);  // validates every node before any work is queued

  std::map<std::string, Tensor> values;
  std::map<std::string, int> uses;
  for (size_t i = 0; i < inputs.size(); ++i) values[inputs_[i]] = inputs[i]->share();
  for (auto& n : nodes_)
    for (auto& in : n.inputs) ++uses[in];
  ++uses[output_];

  for (size_t idx : order()) {
    Node& n = nodes_[idx];
    Tensor y;
    if (n.kind == Kind::Layer) {
      y = n.layer->forward(ctx, values.at(n.inputs[0]), mode);
    } else if (n.kind == Kind::Sum) {
      const Tensor& a = values.at(n.inputs[0]);
      if (n.inputs.size() == 1) {
        y = a.share();
      } else {
        y = Tensor::empty(ctx, a.shape());
        ops::add(ctx, a, values.at(n.inputs[1]), y);
        for (size_t k = 2; k < n.inputs.size(); ++k)
          ops::axpy(ctx, 1.0f, values.at(n.inputs[k]), y);
      }
    } else {
      std::vector<const Tensor*> parts;
      n.concat_channels.clear();
      int64_t c = 0;
      for (auto& in : n.inputs) {
        parts.push_back(&values.at(in));
        n.concat_channels.push_back(values.at(in).dim(1));
        c += values.at(in).dim(1);
      }
      const Shape& s = parts[0]->shape();
      y = Tensor::empty(ctx, Shape{s[0], c, s[2], s[3]});
      ops::concat_channels(ctx, parts, y);
    }
    values[n.name] = std::move(y);
    for (auto& in : n.inputs)
      if (--uses[in] == 0) values.erase(in);
  }
  if (mode == Mode::Train) {
    awaiting_ = true;
    last_input_shapes_ = shapes;
  }
  return std::move(values.at(output_));
}

std::vector<Tensor> Graph::backward_many(Context& ctx, const Tensor& dy) {
  CUDARTS_CHECK(awaiting_, label(), ": backward called without a preceding forward in Train mode");
  std::map<std::string, GradSum> grads;
  auto accumulate = [&](const std::string& name, Tensor g) { grads[name].add(ctx, std::move(g)); };
  accumulate(output_, dy.share());

  const std::vector<size_t>& ord = order();
  for (auto rit = ord.rbegin(); rit != ord.rend(); ++rit) {
    Node& n = nodes_[*rit];
    auto it = grads.find(n.name);
    if (it == grads.end()) {  // does not reach the output
      if (n.layer) n.layer->release_saved();
      continue;
    }
    Tensor g = it->second.take();
    grads.erase(it);
    if (n.kind == Kind::Layer) {
      accumulate(n.inputs[0], n.layer->backward(ctx, g));
    } else if (n.kind == Kind::Sum) {
      for (auto& in : n.inputs) accumulate(in, g.share());
    } else {
      std::vector<Tensor> parts;
      std::vector<Tensor*> ptrs;
      for (int64_t c : n.concat_channels)
        parts.push_back(Tensor::empty(ctx, Shape{g.dim(0), c, g.dim(2), g.dim(3)}));
      for (auto& p : parts) ptrs.push_back(&p);
      ops::split_channels(ctx, g, ptrs);
      for (size_t k = 0; k < parts.size(); ++k) accumulate(n.inputs[k], std::move(parts[k]));
    }
  }
  awaiting_ = false;
  std::vector<Tensor> out;
  for (size_t i = 0; i < inputs_.size(); ++i) {
    auto it = grads.find(inputs_[i]);
    out.push_back(it != grads.end() ? it->second.take()
                                    : Tensor::zeros(ctx, last_input_shapes_[i]));
  }
  return out;
}

Tensor Graph::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  return forward_many(ctx, {&x}, mode);
}

Tensor Graph::backward_impl(Context& ctx, const Tensor& dy) {
  return std::move(backward_many(ctx, dy)[0]);
}

void Graph::release_saved_impl() {
  awaiting_ = false;
}

// ---------------------------------------------------------------- ONNX forms
std::string Sequential::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  std::string h = x;
  for (auto& l : layers_) h = l->to_onnx(g, h);
  return h;
}

std::string Graph::to_onnx_many(onnx::GraphBuilder& g, const std::vector<std::string>& inputs) {
  onnx::GraphBuilder::Scope scope(g, name());
  return onnx_body(g, inputs);
}

std::string Graph::onnx_body(onnx::GraphBuilder& g, const std::vector<std::string>& inputs) {
  CUDARTS_CHECK(inputs.size() == inputs_.size(), label(), ": ONNX export got ", inputs.size(),
                " inputs, expected ", inputs_.size());
  CUDARTS_CHECK(!output_.empty(), label(), ": no output value set");
  std::map<std::string, std::string> values;
  for (size_t i = 0; i < inputs.size(); ++i) values[inputs_[i]] = inputs[i];
  for (size_t idx : order()) {
    Node& n = nodes_[idx];
    std::vector<std::string> in;
    for (const std::string& v : n.inputs) in.push_back(values.at(v));
    std::string y;
    if (n.kind == Kind::Layer) {
      y = n.layer->to_onnx(g, in[0]);
    } else if (in.size() == 1) {
      y = in[0];  // a sum or concatenation of one value is that value
    } else {
      onnx::GraphBuilder::Scope node_scope(g, n.name);
      // Sum adds in the inputs' order, as forward does.
      y = n.kind == Kind::Sum ? g.node("Sum", in)
                              : g.node("Concat", in, {onnx::Attribute::of("axis", int64_t(1))});
    }
    values[n.name] = y;
  }
  return values.at(output_);
}

std::string Graph::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  return onnx_body(g, {x});  // in the scope Layer::to_onnx pushed
}

}  // namespace cudarts
