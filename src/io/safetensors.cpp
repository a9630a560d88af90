// safetensors reading and writing, and atomic file replacement.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cudarts/checkpoint.h"
#include "cudarts/context.h"
#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts {

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

HostTensor to_host(const Tensor& t) {
  HostTensor h;
  h.shape = t.shape().vec();
  h.dtype = t.dtype();
  if (t.dtype() == DType::F32)
    h.f32 = t.to_vector();
  else
    h.i32 = t.to_vector_i32();
  return h;
}

void copy_from_host(Context& ctx, const HostTensor& h, Tensor& t, const std::string& what) {
  CUDARTS_CHECK(Shape(h.shape) == t.shape() && h.dtype == t.dtype(), what, ": stored ",
                dtype_name(h.dtype), Shape(h.shape), " does not match ", t.describe());
  Tensor src = h.dtype == DType::F32 ? Tensor::from_vector(ctx, t.shape(), h.f32)
                                     : Tensor::from_vector_i32(ctx, t.shape(), h.i32);
  ops::copy(ctx, src, t);
}

namespace {
void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      ::close(fd);
      CUDARTS_FAIL("writing '", path, "' failed: ", std::strerror(errno));
    }
    p += n;
    bytes -= size_t(n);
  }
}

// Writes the pieces to path.tmp, fsyncs, renames over path.
void write_atomic(const std::string& path,
                  const std::vector<std::pair<const void*, size_t>>& parts) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CUDARTS_CHECK(fd >= 0, "cannot create '", tmp, "': ", std::strerror(errno));
  for (auto& [data, bytes] : parts) write_all(fd, data, bytes, tmp);
  if (::fsync(fd) != 0) {
    ::close(fd);
    CUDARTS_FAIL("fsync of '", tmp, "' failed: ", std::strerror(errno));
  }
  CUDARTS_CHECK(::close(fd) == 0, "closing '", tmp, "' failed: ", std::strerror(errno));
  CUDARTS_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp, "' to '", path,
                "': ", std::strerror(errno));
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  write_atomic(path, {{text.data(), text.size()}});
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::vector<std::pair<const void*, size_t>> parts;
  for (auto& [name, t] : tensors) {
    CUDARTS_CHECK(name != "__metadata__", "save_safetensors: reserved tensor name");
    const size_t bytes = size_t(t.numel()) * 4;
    CUDARTS_CHECK((t.dtype == DType::F32 ? t.f32.size() : t.i32.size()) == size_t(t.numel()),
                  "save_safetensors: tensor '", name, "' holds the wrong number of values");
    header[name] = {{"dtype", t.dtype == DType::F32 ? "F32" : "I32"},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + bytes}}};
    parts.emplace_back(t.dtype == DType::F32 ? static_cast<const void*>(t.f32.data())
                                             : static_cast<const void*>(t.i32.data()),
                       bytes);
    offset += bytes;
  }
  std::string text = header.dump();
  while (text.size() % 8) text.push_back(' ');  // align the data section
  const uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  parts.insert(parts.begin(), {text.data(), text.size()});
  parts.insert(parts.begin(), {len, 8});
  write_atomic(path, parts);
}

TensorMap load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  CUDARTS_CHECK(f.good(), "cannot open '", path, "'");
  const uint64_t size = uint64_t(f.tellg());
  CUDARTS_CHECK(size >= 8, "'", path, "': ", size,
                " bytes, expected at least the 8-byte header "
                "length at offset 0");
  f.seekg(0);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  CUDARTS_CHECK(n <= size - 8, "'", path, "': header length ", n,
                " at offset 0 runs past the end (", size, " bytes)");
  std::string text(n, '\0');
  f.read(text.data(), std::streamsize(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    CUDARTS_FAIL("'", path, "': the JSON header at offset 8 is invalid: ", e.what());
  }
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  TensorMap out;
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (metadata) *metadata = v.get<std::map<std::string, std::string>>();
      continue;
    }
    const std::string dtype = v.value("dtype", "");
    CUDARTS_CHECK(dtype == "F32" || dtype == "I32", "'", path, "': tensor '", name, "' has dtype '",
                  dtype, "', expected F32 or I32");
    HostTensor t;
    t.dtype = dtype == "F32" ? DType::F32 : DType::I32;
    t.shape = v.at("shape").get<std::vector<int64_t>>();
    const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
    CUDARTS_CHECK(off.size() == 2 && off[0] <= off[1] && off[1] <= data_size &&
                      off[1] - off[0] == uint64_t(t.numel()) * 4,
                  "'", path, "': tensor '", name, "' has data offsets [", off.size() ? off[0] : 0,
                  ", ", off.size() > 1 ? off[1] : 0, ") that do not fit its shape or the ",
                  data_size, "-byte data section starting at offset ", data_start);
    f.seekg(std::streamoff(data_start + off[0]));
    if (t.dtype == DType::F32) {
      t.f32.resize(size_t(t.numel()));
      f.read(reinterpret_cast<char*>(t.f32.data()), std::streamsize(off[1] - off[0]));
    } else {
      t.i32.resize(size_t(t.numel()));
      f.read(reinterpret_cast<char*>(t.i32.data()), std::streamsize(off[1] - off[0]));
    }
    CUDARTS_CHECK(f.good(), "'", path, "': reading tensor '", name, "' at offset ",
                  data_start + off[0], " failed");
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace cudarts
