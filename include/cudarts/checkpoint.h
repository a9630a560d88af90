// Tensor files in the safetensors format (https://github.com/huggingface/safetensors:
// 8-byte little-endian header length, JSON header, raw little-endian data), written
// atomically: a temporary file is written, flushed and fsync'ed, then renamed over the
// target, so a crash at any moment leaves the previous file readable.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cudarts/tensor.h"

namespace cudarts {

struct HostTensor {
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  std::vector<float> f32;
  std::vector<int32_t> i32;
  int64_t numel() const;
};

using TensorMap = std::map<std::string, HostTensor>;

// Copies a tensor (any device) to the host.
HostTensor to_host(const Tensor& t);
// Copies host values into an existing tensor of the same shape and dtype (any device).
void copy_from_host(Context& ctx, const HostTensor& h, Tensor& t, const std::string& what);

// metadata: free-form string pairs stored under "__metadata__". The file also carries CRC-32
// checksums (metadata "cudarts.crc32": one per tensor over its name, dtype, shape and bytes,
// and one over the other metadata pairs), so other safetensors readers still load it.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Errors (InputError) name the file, the offset or first tensor that fails and what was
// expected. Checksums are verified when present; require_checksums rejects a file without them.
TensorMap load_safetensors(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr,
                           bool require_checksums = false);

// Writes `text` to `path` atomically (temporary file, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace cudarts
