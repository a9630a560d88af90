# OpenBLAS (CBLAS interface + openblas_set_num_threads) for the CPU reference backend.
# pkg-config first; otherwise a search under OPENBLAS_ROOT and the usual Debian folders, so
# that a tree unpacked from .deb files (the GPU machine's carried dependencies) works too.
set(OPENBLAS_ROOT "" CACHE PATH "Where OpenBLAS lives when pkg-config cannot find it")
add_library(cudarts_openblas INTERFACE)
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND AND NOT OPENBLAS_ROOT)
  pkg_check_modules(OPENBLAS QUIET IMPORTED_TARGET openblas)
endif()
if(OPENBLAS_FOUND)
  target_link_libraries(cudarts_openblas INTERFACE PkgConfig::OPENBLAS)
  return()
endif()
set(_hints ${OPENBLAS_ROOT} ${OPENBLAS_ROOT}/usr)
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  HINTS ${_hints}
  PATH_SUFFIXES include/x86_64-linux-gnu/openblas-pthread include/openblas include)
find_library(OPENBLAS_LIBRARY NAMES openblas
  HINTS ${_hints}
  PATH_SUFFIXES lib/x86_64-linux-gnu/openblas-pthread lib/x86_64-linux-gnu lib lib64)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found: install libopenblas-dev (scripts/setup.sh) or set "
                      "OPENBLAS_ROOT")
endif()
target_include_directories(cudarts_openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(cudarts_openblas INTERFACE ${OPENBLAS_LIBRARY})
message(STATUS "cudarts: OpenBLAS ${OPENBLAS_LIBRARY}")
