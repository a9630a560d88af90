// Linear layer on cuBLAS: y (N, Out) = x (N, In) w (Out, In)^T + b, with row-major tensors.
// Contract (ops.h): y and dx are written (=); dw and dbias accumulate (+=).
// CPU twin: CpuBackend::linear_* in src/cpu/cpu_backend.cpp. Math mode: set_allow_tf32.
//
// cuBLAS is column-major. A row-major (r, c) matrix with leading dimension c is, read
// column-major, its transpose (c, r) with the same leading dimension. So every product is
// computed transposed, C^T = op(B)^T op(A)^T, with the operands swapped:
//   y  (N, Out)  = x w^T      ->  y^T  (Out, N)  = w   x^T  : gemm(T, N, m=Out, n=N,   k=In)
//                                  A = w (read as (In, Out), lda In), B = x (In, N), ldb In
//   dx (N, In)   = dy w       ->  dx^T (In, N)   = w^T dy^T : gemm(N, N, m=In,  n=N,   k=Out)
//                                  A = w (read as (In, Out), lda In), B = dy (Out, N), ldb Out
//   dw (Out, In) += dy^T x    ->  dw^T (In, Out) += x^T dy  : gemm(N, T, m=In,  n=Out, k=N)
//                                  A = x (read as (In, N), lda In), B = dy (read as (Out, N),
//                                  ldb Out, transposed to (N, Out)), beta = 1
#include <algorithm>
#include <climits>

#include "cuda_backend.h"

namespace cudarts::cuda {

namespace {

constexpr int kLinearBlock = 256;

int grid_for(int64_t n) {
  const int64_t blocks = (n + kLinearBlock - 1) / kLinearBlock;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, 65535 * 8));
}

// cuBLAS takes int extents; a leading dimension must be at least 1 even for empty matrices.
int gemm_dim(int64_t v, const char* op, const Tensor& t) {
  if (v > INT_MAX)
    throw NotSupported(detail::cat("cuda backend: ", op, ": ", t.describe(),
                                   " exceeds the int range of cublasSgemm"));
  return static_cast<int>(v);
}

// y (rows, cols) = bias (cols) broadcast over rows; the GEMM then adds x w^T (beta = 1),
// the order of the CPU twin (memcpy of the bias, then sgemm with beta 1).
__global__ void broadcast_rows_kernel(const float* bias, int64_t rows, int64_t cols, float* y) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = bias[i % cols];
}

// db[o] += sum_i dy[i, o] in double, rows in order (CPU twin: the dbias loop of
// linear_bwd_weight). One thread per column, so reads are coalesced across threads.
__global__ void column_sum_add_kernel(const float* dy, int64_t rows, int64_t cols, float* db) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < cols;
       o += int64_t(gridDim.x) * blockDim.x) {
    double s = 0.0;
    for (int64_t i = 0; i < rows; ++i) s += dy[i * cols + o];
    db[o] += static_cast<float>(s);
  }
}

}  // namespace

void CudaBackend::linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const int n = gemm_dim(x.dim(0), "linear_fwd", x), in = gemm_dim(x.dim(1), "linear_fwd", x);
  const int out = gemm_dim(w.dim(0), "linear_fwd", w);
  if (n == 0 || out == 0) return;
  if (bias) {
    broadcast_rows_kernel<<<grid_for(y.numel()), kLinearBlock, 0, stream_>>>(bias->data(), n, out,
                                                                             y.data());
    CUDARTS_LAUNCH_CHECK("broadcast_rows_kernel", "(bias ", bias->shape(), ", y ", y.shape(), ")");
  }
  const float one = 1.0f, beta = bias ? 1.0f : 0.0f;
  CUDARTS_CUBLAS_CHECK(
      cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w.data(), std::max(in, 1),
                  x.data(), std::max(in, 1), &beta, y.data(), out),
      "(linear_fwd: x ", x.shape(), ", w ", w.shape(), ", y ", y.shape(), ")");
}

void CudaBackend::linear_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx) {
  const int n = gemm_dim(dx.dim(0), "linear_bwd_data", dx);
  const int in = gemm_dim(dx.dim(1), "linear_bwd_data", dx);
  const int out = gemm_dim(w.dim(0), "linear_bwd_data", w);
  if (n == 0 || in == 0) return;
  const float one = 1.0f, zero = 0.0f;
  CUDARTS_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w.data(),
                                   in, dy.data(), std::max(out, 1), &zero, dx.data(), in),
                       "(linear_bwd_data: dy ", dy.shape(), ", w ", w.shape(), ", dx ", dx.shape(),
                       ")");
}

void CudaBackend::linear_bwd_weight(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias) {
  const int n = gemm_dim(x.dim(0), "linear_bwd_weight", x);
  const int in = gemm_dim(x.dim(1), "linear_bwd_weight", x);
  const int out = gemm_dim(dw.dim(0), "linear_bwd_weight", dw);
  if (in > 0 && out > 0) {
    const float one = 1.0f;
    CUDARTS_CUBLAS_CHECK(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x.data(),
                                     in, dy.data(), out, &one, dw.data(), in),
                         "(linear_bwd_weight: x ", x.shape(), ", dy ", dy.shape(), ", dw ",
                         dw.shape(), ")");
  }
  if (dbias && out > 0) {
    column_sum_add_kernel<<<grid_for(out), kLinearBlock, 0, stream_>>>(dy.data(), n, out,
                                                                       dbias->data());
    CUDARTS_LAUNCH_CHECK("column_sum_add_kernel", "(dy ", dy.shape(), ", dbias ", dbias->shape(),
                         ")");
  }
}

}  // namespace cudarts::cuda
