// The CPU GEMM: OpenBLAS's cblas_sgemm, or (without OpenBLAS) simple loops that are correct for
// any transposes and leading dimensions and parallelise over rows when not already inside an
// OpenMP region. Row-major: C (m x n) = alpha op(A) op(B) + beta C.
#include <omp.h>

#include "cpu/cpu_backend.h"

#if defined(CUDARTS_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace cudarts::cpu {

#if defined(CUDARTS_HAVE_OPENBLAS)

void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_single_threaded() {
  openblas_set_num_threads(1);
}

#else

void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  auto at = [&](int i, int p) {
    return trans_a ? a[int64_t(p) * lda + i] : a[int64_t(i) * lda + p];
  };
#pragma omp parallel for if (!omp_in_parallel() && int64_t(m) * n * k > (1 << 20))
  for (int i = 0; i < m; ++i) {
    float* row = c + int64_t(i) * ldc;
    for (int j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    if (!trans_b) {  // row += alpha A(i, p) B(p, :), contiguous over j
      for (int p = 0; p < k; ++p) {
        const float s = alpha * at(i, p);
        const float* brow = b + int64_t(p) * ldb;
        for (int j = 0; j < n; ++j) row[j] += s * brow[j];
      }
    } else {  // row[j] += alpha <A(i, :), B(j, :)>, dot products over p
      for (int j = 0; j < n; ++j) {
        const float* brow = b + int64_t(j) * ldb;
        float acc = 0.0f;
        for (int p = 0; p < k; ++p) acc += at(i, p) * brow[p];
        row[j] += alpha * acc;
      }
    }
  }
}

void gemm_single_threaded() {}

#endif

}  // namespace cudarts::cpu
