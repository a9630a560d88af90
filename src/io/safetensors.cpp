// safetensors reading and writing, and atomic file replacement.
#include <fcntl.h>
#include <unistd.h>

#include <zlib.h>

#include <algorithm>
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

namespace {

constexpr const char* kChecksumKey = "cudarts.crc32";

uint32_t crc_update(uint32_t crc, const void* data, size_t bytes) {
  // zlib's crc32 takes uInt lengths; feed large tensors in pieces.
  const unsigned char* p = static_cast<const unsigned char*>(data);
  while (bytes > 0) {
    const uInt n = uInt(std::min<size_t>(bytes, size_t(1) << 30));
    crc = uint32_t(crc32(crc, p, n));
    p += n;
    bytes -= n;
  }
  return crc;
}

// A tensor's checksum covers its name, dtype, shape and bytes.
uint32_t tensor_crc(const std::string& name, const HostTensor& t) {
  std::string head = name + "\n" + (t.dtype == DType::F32 ? "F32" : "I32") + "\n";
  for (int64_t d : t.shape) head += std::to_string(d) + ",";
  uint32_t crc = crc_update(uint32_t(crc32(0, nullptr, 0)), head.data(), head.size());
  const void* data = t.dtype == DType::F32 ? static_cast<const void*>(t.f32.data())
                                           : static_cast<const void*>(t.i32.data());
  return crc_update(crc, data, size_t(t.numel()) * 4);
}

// The metadata's checksum covers every pair but the checksum entry itself, in key order.
uint32_t metadata_crc(const std::map<std::string, std::string>& md) {
  uint32_t crc = uint32_t(crc32(0, nullptr, 0));
  for (auto& [k, v] : md) {
    if (k == kChecksumKey) continue;
    const std::string pair = k + "=" + std::to_string(v.size()) + ":" + v + "\n";
    crc = crc_update(crc, pair.data(), pair.size());
  }
  return crc;
}

std::string hex(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

}  // namespace

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::map<std::string, std::string> md = metadata;
  CUDARTS_CHECK(!md.count(kChecksumKey), "save_safetensors: metadata key '", kChecksumKey,
                "' is reserved");
  nlohmann::json sums = nlohmann::json::object();
  for (auto& [name, t] : tensors)
    if ((t.dtype == DType::F32 ? t.f32.size() : t.i32.size()) == size_t(t.numel()))
      sums[name] = hex(tensor_crc(name, t));
  sums["__metadata__"] = hex(metadata_crc(md));
  md[kChecksumKey] = sums.dump();
  header["__metadata__"] = md;
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

namespace {
TensorMap load_safetensors_impl(const std::string& path,
                                std::map<std::string, std::string>* metadata,
                                bool require_checksums);
}  // namespace

TensorMap load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata,
                           bool require_checksums) {
  try {
    return load_safetensors_impl(path, metadata, require_checksums);
  } catch (const nlohmann::json::exception& e) {
    // A header that is valid JSON but not of the expected shape (a wrong type somewhere).
    CUDARTS_INPUT_FAIL("'", path,
                       "': the JSON header at offset 8 is not a safetensors header: ", e.what());
  }
}

namespace {
TensorMap load_safetensors_impl(const std::string& path,
                                std::map<std::string, std::string>* metadata,
                                bool require_checksums) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  CUDARTS_INPUT_CHECK(f.good(), "cannot open '", path, "'");
  const uint64_t size = uint64_t(f.tellg());
  CUDARTS_INPUT_CHECK(size >= 8, "'", path, "': ", size,
                      " bytes, expected at least the 8-byte header "
                      "length at offset 0");
  f.seekg(0);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  CUDARTS_INPUT_CHECK(n <= size - 8, "'", path, "': header length ", n,
                      " at offset 0 runs past the end (", size, " bytes)");
  std::string text(n, '\0');
  f.read(text.data(), std::streamsize(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    CUDARTS_INPUT_FAIL("'", path, "': the JSON header at offset 8 is invalid: ", e.what());
  }
  CUDARTS_INPUT_CHECK(header.is_object(), "'", path,
                      "': the JSON header at offset 8 is not an object");
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  std::map<std::string, std::string> md;
  if (header.contains("__metadata__"))
    md = header["__metadata__"].get<std::map<std::string, std::string>>();
  nlohmann::json sums;
  if (md.count(kChecksumKey)) {
    try {
      sums = nlohmann::json::parse(md[kChecksumKey]);
    } catch (const std::exception&) {
      CUDARTS_INPUT_FAIL("'", path, "': the checksum table (metadata '", kChecksumKey,
                         "') is damaged");
    }
    CUDARTS_INPUT_CHECK(
        sums.is_object() && sums.contains("__metadata__") && sums["__metadata__"].is_string(), "'",
        path, "': the checksum table (metadata '", kChecksumKey, "') is damaged");
    CUDARTS_INPUT_CHECK(sums["__metadata__"].get<std::string>() == hex(metadata_crc(md)), "'", path,
                        "': checksum mismatch in the metadata (__metadata__): the file is "
                        "damaged");
  } else {
    CUDARTS_INPUT_CHECK(!require_checksums, "'", path, "' has no checksums (metadata '",
                        kChecksumKey, "'); it was not written by cudarts or is damaged");
  }
  if (metadata) *metadata = md;
  TensorMap out;
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    CUDARTS_INPUT_CHECK(v.is_object(), "'", path, "': header entry '", name, "' is not an object");
    const std::string dtype = v.value("dtype", "");
    CUDARTS_INPUT_CHECK(dtype == "F32" || dtype == "I32", "'", path, "': tensor '", name,
                        "' has dtype '", dtype, "', expected F32 or I32");
    HostTensor t;
    t.dtype = dtype == "F32" ? DType::F32 : DType::I32;
    t.shape = v.at("shape").get<std::vector<int64_t>>();
    const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
    CUDARTS_INPUT_CHECK(off.size() == 2 && off[0] <= off[1] && off[1] <= data_size &&
                            off[1] - off[0] == uint64_t(t.numel()) * 4,
                        "'", path, "': tensor '", name, "' has data offsets [",
                        off.size() ? off[0] : 0, ", ", off.size() > 1 ? off[1] : 0,
                        ") that do not fit its shape or the ", data_size,
                        "-byte data section starting at offset ", data_start);
    f.seekg(std::streamoff(data_start + off[0]));
    if (t.dtype == DType::F32) {
      t.f32.resize(size_t(t.numel()));
      f.read(reinterpret_cast<char*>(t.f32.data()), std::streamsize(off[1] - off[0]));
    } else {
      t.i32.resize(size_t(t.numel()));
      f.read(reinterpret_cast<char*>(t.i32.data()), std::streamsize(off[1] - off[0]));
    }
    CUDARTS_INPUT_CHECK(f.good(), "'", path, "': reading tensor '", name, "' at offset ",
                        data_start + off[0], " failed");
    if (sums.is_object()) {
      CUDARTS_INPUT_CHECK(sums.contains(name) && sums[name].is_string(), "'", path, "': tensor '",
                          name, "' has no checksum; the file is damaged");
      CUDARTS_INPUT_CHECK(sums[name].get<std::string>() == hex(tensor_crc(name, t)), "'", path,
                          "': checksum mismatch in tensor '", name, "' (data at offset ",
                          data_start + off[0], "): the file is damaged");
    }
    out.emplace(name, std::move(t));
  }
  if (sums.is_object())
    for (auto& [name, v] : sums.items())
      CUDARTS_INPUT_CHECK(name == "__metadata__" || out.count(name), "'", path, "': tensor '", name,
                          "' is listed in the checksums but missing; the file is damaged");
  return out;
}
}  // namespace

}  // namespace cudarts
