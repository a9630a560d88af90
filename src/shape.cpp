// Shape and Device helpers.
#include "cudarts/shape.h"

#include <sstream>

#include "cudarts/device.h"
#include "cudarts/error.h"

namespace cudarts {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  CUDARTS_CHECK(dims.size() <= static_cast<size_t>(kMaxDims), "Shape: ", dims.size(),
                " dimensions given, at most ", kMaxDims, " supported");
  for (size_t i = 0; i < dims.size(); ++i) {
    CUDARTS_CHECK(dims[i] >= 0, "Shape: extent ", i, " is ", dims[i], ", expected >= 0");
    dims_[i] = dims[i];
  }
  ndim_ = static_cast<int>(dims.size());
}

int Shape::check_index(int i) const {
  CUDARTS_CHECK(i >= 0 && i < ndim_, "Shape ", str(), ": dimension index ", i, " out of range [0, ",
                ndim_, ")");
  return i;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::str() const {
  std::ostringstream s;
  s << '[';
  for (int i = 0; i < ndim_; ++i) s << (i ? ", " : "") << dims_[i];
  s << ']';
  return s.str();
}

bool Shape::operator==(const Shape& o) const {
  if (ndim_ != o.ndim_) return false;
  for (int i = 0; i < ndim_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << s.str();
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

std::ostream& operator<<(std::ostream& os, const Device& d) {
  return os << d.str();
}

}  // namespace cudarts
