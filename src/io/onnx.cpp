// ONNX export: the graph builder the layers write into, BatchNorm folding, and the protobuf
// encoding of the ModelProto (field numbers from onnx/onnx.proto; docs/DESIGN.md section 12).
#include "cudarts/onnx.h"

#include <cmath>
#include <cstring>
#include <set>

#include "cudarts/checkpoint.h"
#include "cudarts/error.h"

namespace cudarts::onnx {

// ---------------------------------------------------------------- attributes
namespace {
Attribute named(const std::string& name, Attribute::Kind kind) {
  Attribute a;
  a.name = name;
  a.kind = kind;
  return a;
}
}  // namespace

Attribute Attribute::of(const std::string& name, int64_t v) {
  Attribute a = named(name, Kind::Int);
  a.i = v;
  return a;
}
Attribute Attribute::of(const std::string& name, std::vector<int64_t> v) {
  Attribute a = named(name, Kind::Ints);
  a.ints = std::move(v);
  return a;
}
Attribute Attribute::of_float(const std::string& name, float v) {
  Attribute a = named(name, Kind::Float);
  a.f = v;
  return a;
}
Attribute Attribute::of_tensor(const std::string& name, std::vector<float> v) {
  Attribute a = named(name, Kind::Tensor);
  a.tensor = std::move(v);
  return a;
}

// ---------------------------------------------------------------- builder
GraphBuilder::Scope::Scope(GraphBuilder& g, const std::string& part) : g_(g) {
  g_.scope_.push_back(part);
}
GraphBuilder::Scope::~Scope() {
  g_.scope_.pop_back();
}

std::string GraphBuilder::scoped(const std::string& local) const {
  std::string s;
  for (const std::string& p : scope_) s += p + ".";
  return s + local;
}

std::string GraphBuilder::unique(const std::string& base) {
  int& n = used_[base];
  const std::string name = n == 0 ? base : base + "_" + std::to_string(n);
  ++n;
  return name;
}

std::string GraphBuilder::node(const std::string& op_type, std::vector<std::string> inputs,
                               std::vector<Attribute> attributes) {
  // The scope path names the layer; a layer writing several nodes gets op-suffixed names.
  std::string base = scoped(op_type);
  const std::string name = unique(base);
  Node n;
  n.op_type = op_type;
  n.name = name;
  n.inputs = std::move(inputs);
  n.outputs = {name};
  n.attributes = std::move(attributes);
  nodes_.push_back(std::move(n));
  return name;
}

std::string GraphBuilder::weight(const std::string& local_name, const Tensor& t) {
  CUDARTS_CHECK(t.defined() && t.dtype() == DType::F32, "ONNX export: ", scoped(local_name),
                " must be a defined float32 tensor");
  const HostTensor h = to_host(t);
  return constant(local_name, h.shape, h.f32);
}

std::string GraphBuilder::constant(const std::string& local_name, std::vector<int64_t> dims,
                                   std::vector<float> values) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  CUDARTS_CHECK(n == int64_t(values.size()), "ONNX export: ", scoped(local_name), " has ",
                values.size(), " values for ", n, " elements");
  Initializer init;
  init.name = unique(scoped(local_name));
  init.dims = std::move(dims);
  init.f32 = std::move(values);
  initializers_.push_back(std::move(init));
  return initializers_.back().name;
}

std::string GraphBuilder::constant_i64(const std::string& local_name, std::vector<int64_t> values) {
  Initializer init;
  init.name = unique(scoped(local_name));
  init.dims = {int64_t(values.size())};
  init.int64 = true;
  init.i64 = std::move(values);
  initializers_.push_back(std::move(init));
  return initializers_.back().name;
}

GraphBuilder::Initializer* GraphBuilder::find_initializer(const std::string& name) {
  for (Initializer& i : initializers_)
    if (i.name == name) return &i;
  return nullptr;
}

// ---------------------------------------------------------------- BatchNorm folding
namespace {
const Attribute* find_attribute(const GraphBuilder::Node& n, const std::string& name) {
  for (const Attribute& a : n.attributes)
    if (a.name == name) return &a;
  return nullptr;
}
}  // namespace

int fold_batchnorm(GraphBuilder& g, const std::vector<std::string>& graph_outputs) {
  auto& nodes = g.nodes();
  std::map<std::string, int> uses;
  for (const auto& n : nodes)
    for (const std::string& in : n.inputs) ++uses[in];
  for (const std::string& o : graph_outputs) ++uses[o];
  std::map<std::string, size_t> producer;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const std::string& o : nodes[i].outputs) producer[o] = i;

  int folded = 0;
  std::vector<bool> removed(nodes.size(), false);
  for (size_t b = 0; b < nodes.size(); ++b) {
    auto& bn = nodes[b];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() != 5) continue;
    auto p = producer.find(bn.inputs[0]);
    if (p == producer.end() || uses[bn.inputs[0]] != 1) continue;
    auto& conv = nodes[p->second];
    if (conv.op_type != "Conv") continue;
    GraphBuilder::Initializer* w = g.find_initializer(conv.inputs[1]);
    GraphBuilder::Initializer* bias =
        conv.inputs.size() > 2 ? g.find_initializer(conv.inputs[2]) : nullptr;
    GraphBuilder::Initializer *scale = g.find_initializer(bn.inputs[1]),
                              *shift = g.find_initializer(bn.inputs[2]),
                              *mean = g.find_initializer(bn.inputs[3]),
                              *var = g.find_initializer(bn.inputs[4]);
    if (!w || !scale || !shift || !mean || !var || (conv.inputs.size() > 2 && !bias)) continue;
    if (uses[conv.inputs[1]] != 1 || (bias && uses[conv.inputs[2]] != 1)) continue;
    if (!bias && uses[bn.inputs[2]] != 1) continue;  // its shift will become the bias
    const Attribute* eps_attr = find_attribute(bn, "epsilon");
    const double eps = eps_attr ? double(eps_attr->f) : 1e-5;
    const int64_t out = w->dims.at(0);
    const int64_t per = int64_t(w->f32.size()) / out;
    std::vector<float> new_bias(static_cast<size_t>(out));
    for (int64_t c = 0; c < out; ++c) {
      const size_t k = size_t(c);
      const double s = double(scale->f32[k]) / std::sqrt(double(var->f32[k]) + eps);
      for (int64_t j = 0; j < per; ++j) {
        float& v = w->f32[size_t(c * per + j)];
        v = float(double(v) * s);
      }
      const double b0 = bias ? double(bias->f32[k]) : 0.0;
      new_bias[k] = float((b0 - double(mean->f32[k])) * s + double(shift->f32[k]));
    }
    if (bias) {
      bias->f32 = new_bias;
    } else {
      // The BatchNorm's shift initializer (used by nothing else) becomes the bias.
      shift->f32 = new_bias;
      conv.inputs.push_back(bn.inputs[2]);
    }
    conv.outputs[0] = bn.outputs[0];
    removed[b] = true;
    ++folded;
  }
  // Drop the folded BatchNorms and the initializers nothing reads any more.
  std::vector<GraphBuilder::Node> kept;
  for (size_t i = 0; i < nodes.size(); ++i)
    if (!removed[i]) kept.push_back(std::move(nodes[i]));
  nodes = std::move(kept);
  std::set<std::string> read;
  for (const auto& n : nodes)
    for (const std::string& in : n.inputs) read.insert(in);
  auto& inits = g.initializers();
  std::vector<GraphBuilder::Initializer> live;
  for (auto& i : inits)
    if (read.count(i.name)) live.push_back(std::move(i));
  inits = std::move(live);
  return folded;
}

// ---------------------------------------------------------------- protobuf encoding
namespace {

// Protocol buffers wire format: a key (field << 3 | wire type) then varint (0), 64-bit (1),
// length-delimited (2) or 32-bit (5) data.
class Message {
 public:
  void varint_field(int field, uint64_t v) {
    key(field, 0);
    varint(v);
  }
  void int64_field(int field, int64_t v) { varint_field(field, uint64_t(v)); }
  void float_field(int field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);  // little-endian hosts (x86_64, aarch64)
    buf_.append(b, 4);
  }
  void bytes_field(int field, const void* data, size_t n) {
    key(field, 2);
    varint(n);
    buf_.append(static_cast<const char*>(data), n);
  }
  void string_field(int field, const std::string& s) { bytes_field(field, s.data(), s.size()); }
  void message_field(int field, const Message& m) { string_field(field, m.buf_); }
  void packed_int64_field(int field, const std::vector<int64_t>& v) {
    Message inner;
    for (int64_t x : v) inner.varint(uint64_t(x));
    string_field(field, inner.buf_);
  }
  const std::string& bytes() const { return buf_; }

 private:
  void key(int field, int wire) { varint(uint64_t(field) << 3 | uint64_t(wire)); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(char(v | 0x80));
      v >>= 7;
    }
    buf_.push_back(char(v));
  }
  std::string buf_;
};

constexpr int kFloat = 1, kInt64 = 7;  // TensorProto.DataType

Message tensor_proto(const std::string& name, const std::vector<int64_t>& dims, bool int64,
                     const std::vector<float>& f32, const std::vector<int64_t>& i64) {
  Message t;
  t.packed_int64_field(1, dims);              // dims
  t.int64_field(2, int64 ? kInt64 : kFloat);  // data_type
  if (!name.empty()) t.string_field(8, name);
  if (int64) {
    std::string raw(i64.size() * 8, '\0');
    std::memcpy(raw.data(), i64.data(), raw.size());
    t.bytes_field(9, raw.data(), raw.size());  // raw_data, little-endian
  } else {
    t.bytes_field(9, f32.data(), f32.size() * 4);
  }
  return t;
}

Message attribute_proto(const Attribute& a) {
  Message m;
  m.string_field(1, a.name);
  switch (a.kind) {
    case Attribute::Kind::Int:
      m.int64_field(3, a.i);
      m.int64_field(20, 2);  // type INT
      break;
    case Attribute::Kind::Ints:
      m.packed_int64_field(8, a.ints);
      m.int64_field(20, 7);  // INTS
      break;
    case Attribute::Kind::Float:
      m.float_field(2, a.f);
      m.int64_field(20, 1);  // FLOAT
      break;
    case Attribute::Kind::Tensor:
      m.message_field(5, tensor_proto("", {int64_t(a.tensor.size())}, false, a.tensor, {}));
      m.int64_field(20, 4);  // TENSOR
      break;
  }
  return m;
}

// ValueInfoProto of a float tensor; a negative dimension is written as the symbol "N".
Message value_info(const std::string& name, const std::vector<int64_t>& dims) {
  Message shape;
  for (int64_t d : dims) {
    Message dim;
    if (d < 0)
      dim.string_field(2, "N");  // dim_param
    else
      dim.int64_field(1, d);  // dim_value
    shape.message_field(1, dim);
  }
  Message tensor;
  tensor.int64_field(1, kFloat);  // elem_type
  tensor.message_field(2, shape);
  Message type;
  type.message_field(1, tensor);  // tensor_type
  Message v;
  v.string_field(1, name);
  v.message_field(2, type);
  return v;
}

}  // namespace

std::string export_model(Layer& net, const Shape& input_shape, const ExportOptions& options) {
  CUDARTS_CHECK(input_shape.ndim() == 4 && input_shape.numel() > 0, "ONNX export of ", net.type(),
                " '", net.name(), "': input shape ", input_shape,
                " must be (N, C, H, W) with positive sizes");
  const Shape out_shape = net.output_shape(input_shape);  // validates the input against the net
  GraphBuilder g;
  const std::string input = "input";
  std::string out = net.to_onnx(g, input);
  // The graph's output value is called "logits" (an Identity when the net adds no node, e.g.
  // a bare Identity layer).
  bool renamed = false;
  for (auto& n : g.nodes())
    for (std::string& o : n.outputs)
      if (o == out) {
        o = "logits";
        renamed = true;
      }
  if (renamed) {
    for (auto& n : g.nodes())
      for (std::string& in : n.inputs)
        if (in == out) in = "logits";
  } else {
    g.nodes().push_back({"Identity", "output", {out}, {"logits"}, {}});
  }
  if (options.fold_batchnorm) fold_batchnorm(g, {"logits"});

  Message graph;
  for (const auto& n : g.nodes()) {
    Message m;
    for (const std::string& in : n.inputs) m.string_field(1, in);
    for (const std::string& o : n.outputs) m.string_field(2, o);
    m.string_field(3, n.name);
    m.string_field(4, n.op_type);
    for (const Attribute& a : n.attributes) m.message_field(5, attribute_proto(a));
    graph.message_field(1, m);
  }
  graph.string_field(2, options.graph_name);
  for (const auto& i : g.initializers())
    graph.message_field(5, tensor_proto(i.name, i.dims, i.int64, i.f32, i.i64));
  std::vector<int64_t> in_dims = input_shape.vec(), out_dims = out_shape.vec();
  if (options.dynamic_batch) in_dims[0] = out_dims[0] = -1;
  graph.message_field(11, value_info(input, in_dims));
  graph.message_field(12, value_info("logits", out_dims));

  Message opset;
  opset.string_field(1, "");  // the default domain
  opset.int64_field(2, kOpset);
  Message model;
  model.int64_field(1, kIrVersion);
  model.string_field(2, "cudarts");
  model.string_field(3, "0.1");
  if (!options.doc.empty()) model.string_field(6, options.doc);
  model.message_field(7, graph);
  model.message_field(8, opset);
  for (const auto& [k, v] : options.metadata) {
    Message entry;
    entry.string_field(1, k);
    entry.string_field(2, v);
    model.message_field(14, entry);
  }
  return model.bytes();
}

void export_model_file(Layer& net, const Shape& input_shape, const std::string& path,
                       const ExportOptions& options) {
  CUDARTS_INPUT_CHECK(!path.empty(), "ONNX export: empty output path");
  const std::string bytes = export_model(net, input_shape, options);
  try {
    write_file_atomic(path, bytes);
  } catch (const Error& e) {
    CUDARTS_INPUT_FAIL("ONNX export: cannot write '", path, "': ", e.what());
  }
}

}  // namespace cudarts::onnx
