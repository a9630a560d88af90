// cudarts: differentiable neural architecture search on CUDA, cuDNN and cuBLAS.
// The one header a user includes. No CUDA headers are pulled in.
#pragma once
#include "cudarts/allocator.h"
#include "cudarts/context.h"
#include "cudarts/data.h"
#include "cudarts/device.h"
#include "cudarts/error.h"
#include "cudarts/graph.h"
#include "cudarts/layer.h"
#include "cudarts/layers.h"
#include "cudarts/mixed_op.h"
#include "cudarts/ops.h"
#include "cudarts/optim.h"
#include "cudarts/philox.h"
#include "cudarts/search_model.h"
#include "cudarts/shape.h"
#include "cudarts/tensor.h"
