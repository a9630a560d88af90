# BLAS for the CPU reference backend. CUDARTS_BLAS = AUTO (OpenBLAS when found, else the
# built-in GEMM), OpenBLAS (required) or builtin. OpenBLAS is found through pkg-config or a
# plain search under OPENBLAS_ROOT and the usual Debian folders. The built-in GEMM (simple
# loops, src/cpu/gemm.cpp) serves machines without OpenBLAS, such as the GPU machine, where the
# CPU backend only computes test references.
set(CUDARTS_BLAS "AUTO" CACHE STRING "CPU GEMM: AUTO, OpenBLAS or builtin")
set_property(CACHE CUDARTS_BLAS PROPERTY STRINGS AUTO OpenBLAS builtin)
set(OPENBLAS_ROOT "" CACHE PATH "Where OpenBLAS lives when pkg-config cannot find it")
add_library(cudarts_openblas INTERFACE)
set(CUDARTS_WITH_OPENBLAS OFF)
if(CUDARTS_BLAS STREQUAL "builtin")
  message(STATUS "cudarts: built-in GEMM (CUDARTS_BLAS=builtin)")
  return()
endif()
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND AND NOT OPENBLAS_ROOT)
  pkg_check_modules(OPENBLAS QUIET IMPORTED_TARGET openblas)
endif()
if(OPENBLAS_FOUND)
  target_link_libraries(cudarts_openblas INTERFACE PkgConfig::OPENBLAS)
  set(CUDARTS_WITH_OPENBLAS ON)
  return()
endif()
set(_hints ${OPENBLAS_ROOT} ${OPENBLAS_ROOT}/usr)
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  HINTS ${_hints}
  PATH_SUFFIXES include/x86_64-linux-gnu/openblas-pthread include/openblas include)
find_library(OPENBLAS_LIBRARY NAMES openblas
  HINTS ${_hints}
  PATH_SUFFIXES lib/x86_64-linux-gnu/openblas-pthread lib/x86_64-linux-gnu lib lib64)
if(OPENBLAS_INCLUDE_DIR AND OPENBLAS_LIBRARY)
  target_include_directories(cudarts_openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
  target_link_libraries(cudarts_openblas INTERFACE ${OPENBLAS_LIBRARY})
  set(CUDARTS_WITH_OPENBLAS ON)
  message(STATUS "cudarts: OpenBLAS ${OPENBLAS_LIBRARY}")
elseif(CUDARTS_BLAS STREQUAL "OpenBLAS")
  message(FATAL_ERROR "CUDARTS_BLAS=OpenBLAS but OpenBLAS was not found: install "
                      "libopenblas-dev (scripts/setup.sh) or set OPENBLAS_ROOT")
else()
  message(STATUS "cudarts: OpenBLAS not found; using the built-in GEMM")
endif()
