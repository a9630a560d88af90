// Checks for every CUDA, cuDNN and cuBLAS call (internal to the CUDA backend): a failure
// throws cudarts::Error naming the call, file:line and the caller's context (shapes).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "cudarts/error.h"

#define CUDARTS_CUDA_CHECK(call, ...)                                                      \
  do {                                                                                     \
    const cudaError_t cudarts_err_ = (call);                                               \
    if (cudarts_err_ != cudaSuccess) {                                                     \
      (void)cudaGetLastError();                                                            \
      ::cudarts::detail::throw_error(                                                      \
          __FILE__, __LINE__,                                                              \
          ::cudarts::detail::cat(#call, " failed: ", cudaGetErrorName(cudarts_err_), " (", \
                                 cudaGetErrorString(cudarts_err_), ") ", ##__VA_ARGS__));  \
    }                                                                                      \
  } while (0)

#define CUDARTS_CUDNN_CHECK(call, ...)                                                      \
  do {                                                                                      \
    const cudnnStatus_t cudarts_st_ = (call);                                               \
    if (cudarts_st_ != CUDNN_STATUS_SUCCESS)                                                \
      ::cudarts::detail::throw_error(                                                       \
          __FILE__, __LINE__,                                                               \
          ::cudarts::detail::cat(#call, " failed: ", cudnnGetErrorString(cudarts_st_), " ", \
                                 ##__VA_ARGS__));                                           \
  } while (0)

#define CUDARTS_CUBLAS_CHECK(call, ...)                                                       \
  do {                                                                                        \
    const cublasStatus_t cudarts_st_ = (call);                                                \
    if (cudarts_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::cudarts::detail::throw_error(                                                         \
          __FILE__, __LINE__,                                                                 \
          ::cudarts::detail::cat(#call, " failed: ", cublasGetStatusString(cudarts_st_), " ", \
                                 ##__VA_ARGS__));                                             \
  } while (0)

// After every kernel launch: catches configuration errors at the op that launched.
#define CUDARTS_LAUNCH_CHECK(kernel, ...) \
  CUDARTS_CUDA_CHECK(cudaGetLastError(), "launching " kernel " ", ##__VA_ARGS__)
