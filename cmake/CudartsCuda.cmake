# Decides whether the CUDA backend is built (CUDARTS_CUDA = AUTO | ON | OFF) and
# finds cuDNN (in the toolkit, under CUDNN_ROOT, or in a Python nvidia-cudnn wheel).
set(CUDARTS_WITH_CUDA OFF)
if(CUDARTS_CUDA STREQUAL "OFF")
  return()
endif()

include(CheckLanguage)
check_language(CUDA)
set(_why "")
if(NOT CMAKE_CUDA_COMPILER)
  set(_why "nvcc not found")
else()
  find_package(CUDAToolkit QUIET)
  if(NOT CUDAToolkit_FOUND)
    set(_why "CUDA toolkit not found")
  elseif(NOT TARGET CUDA::cublas)
    set(_why "cuBLAS not found")
  else()
    find_path(CUDNN_INCLUDE_DIR cudnn.h
      HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS}
      PATH_SUFFIXES include)
    find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
      HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_DIR}
      PATH_SUFFIXES lib lib64 lib/x64)
    if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
      set(_why "cuDNN not found (set CUDNN_ROOT)")
    endif()
  endif()
endif()

if(_why)
  if(CUDARTS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "CUDARTS_CUDA=ON but ${_why}")
  endif()
  message(STATUS "cudarts: building without the CUDA backend: ${_why}")
  return()
endif()

enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CUDARTS_WITH_CUDA ON)
add_library(cudarts_cudnn INTERFACE)
target_include_directories(cudarts_cudnn INTERFACE $<BUILD_INTERFACE:${CUDNN_INCLUDE_DIR}>)
target_link_libraries(cudarts_cudnn INTERFACE $<BUILD_INTERFACE:${CUDNN_LIBRARY}>)
message(STATUS "cudarts: cuDNN ${CUDNN_INCLUDE_DIR} ${CUDNN_LIBRARY}; architectures ${CMAKE_CUDA_ARCHITECTURES}")
