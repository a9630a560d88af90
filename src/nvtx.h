// NVTX ranges (header-only nvtx3 from the CUDA toolkit) so Nsight Systems shows layers and
// ops; a push/pop costs a branch when no profiler is attached. No-op without the toolkit.
#pragma once
#if defined(CUDARTS_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#endif

namespace cudarts {

class NvtxRange {
 public:
#if defined(CUDARTS_HAVE_NVTX)
  explicit NvtxRange(const char* label) {
    nvtxRangePushA(label);
  }
  ~NvtxRange() {
    nvtxRangePop();
  }
#else
  explicit NvtxRange(const char*) {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace cudarts
