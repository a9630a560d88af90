// CPU reference of the data-movement ops used by the DARTS pipeline: spatial crop,
// per-sample scaling and Bernoulli drop-path scales, augmentation, gather.
#include <cstring>

#include "cpu/cpu_backend.h"
#include "cudarts/philox.h"

namespace cudarts::cpu {

void CpuBackend::crop2d_fwd(const Tensor& x, int top, int left, Tensor& y) {
  const int64_t nc = y.dim(0) * y.dim(1), h = y.dim(2), w = y.dim(3);
  const int64_t xh = x.dim(2), xw = x.dim(3);
#pragma omp parallel for if (nc * h * w > 65536)
  for (int64_t i = 0; i < nc; ++i)
    for (int64_t r = 0; r < h; ++r)
      std::memcpy(y.data() + (i * h + r) * w, x.data() + (i * xh + r + top) * xw + left,
                  sizeof(float) * size_t(w));
}

void CpuBackend::crop2d_bwd(const Tensor& dy, int top, int left, Tensor& dx) {
  const int64_t nc = dy.dim(0) * dy.dim(1), h = dy.dim(2), w = dy.dim(3);
  const int64_t xh = dx.dim(2), xw = dx.dim(3);
  std::memset(dx.data(), 0, dx.nbytes());
#pragma omp parallel for if (nc * h * w > 65536)
  for (int64_t i = 0; i < nc; ++i)
    for (int64_t r = 0; r < h; ++r)
      std::memcpy(dx.data() + (i * xh + r + top) * xw + left, dy.data() + (i * h + r) * w,
                  sizeof(float) * size_t(w));
}

void CpuBackend::scale_samples(const Tensor& x, const Tensor& scales, Tensor& y) {
  const int64_t n = x.dim(0), per = x.numel() / (n ? n : 1);
#pragma omp parallel for if (x.numel() > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float s = scales.data()[i];
    for (int64_t j = 0; j < per; ++j) y.data()[i * per + j] = s * x.data()[i * per + j];
  }
}

void CpuBackend::bernoulli_scale(Tensor& out, float keep_prob, uint64_t seed, uint64_t offset,
                                 const uint64_t* shift) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  for (int64_t i = 0; i < out.numel(); ++i) {
    const float u = philox_uniform(philox_word(seed, offset, 0, uint64_t(i)));
    out.data()[i] = u < keep_prob ? 1.0f / keep_prob : 0.0f;
  }
}

void CpuBackend::augment(const Tensor& x, Tensor& y, const AugmentParams& p, uint64_t seed,
                         uint64_t offset, const uint64_t* shift) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
#pragma omp parallel for if (x.numel() > 65536)
  for (int64_t i = 0; i < n; ++i) {
    auto word = [&](int k) { return philox_word(seed, offset, 0, uint64_t(8 * i + k)); };
    const int64_t oy = int64_t(word(0) % uint32_t(2 * p.pad + 1)) - p.pad;
    const int64_t ox = int64_t(word(1) % uint32_t(2 * p.pad + 1)) - p.pad;
    const bool flip = p.flip && (word(2) & 1u);
    const int64_t cy = int64_t(word(3) % uint32_t(h)), cx = int64_t(word(4) % uint32_t(w));
    const int64_t half = p.cutout / 2;
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t r = 0; r < h; ++r)
        for (int64_t col = 0; col < w; ++col) {
          const int64_t src_col = flip ? w - 1 - col : col;
          const int64_t sy = r + oy, sx = src_col + ox;
          float v = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                        ? x.data()[((i * c + ch) * h + sy) * w + sx]
                        : 0.0f;
          if (p.cutout > 0 && r >= cy - half && r < cy - half + p.cutout && col >= cx - half &&
              col < cx - half + p.cutout)
            v = 0.0f;
          y.data()[((i * c + ch) * h + r) * w + col] = v;
        }
  }
}

void CpuBackend::gather(const Tensor& src, const Tensor& index, Tensor& dst) {
  const int64_t m = src.numel();
  for (int64_t i = 0; i < dst.numel(); ++i) {
    const int32_t k = index.data_i32()[i];
    CUDARTS_CHECK(k >= 0 && k < m, "gather: index ", k, " at position ", i, " outside [0, ", m,
                  ")");
    dst.data()[i] = src.data()[k];
  }
}

}  // namespace cudarts::cpu
