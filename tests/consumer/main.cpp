// Uses an installed cudarts through its one public header: a Conv2d on a CPU context,
// forward and backward on a small tensor, and a StepGraph replaying an op on wrapped memory. Exits
// non-zero when anything is off.
#include <cstdio>

#include <cudarts/cudarts.h>

int main() {
  try {
    cudarts::Context ctx(cudarts::Device::cpu(), cudarts::ContextOptions{1});
    cudarts::Conv2d conv(ctx, "conv", 3, 8, 3, cudarts::Conv2dParams::make(1, 1));
    cudarts::Tensor x = cudarts::Tensor::full(ctx, cudarts::Shape{2, 3, 6, 6}, 0.5f);
    cudarts::Tensor y = conv.forward(ctx, x, cudarts::Mode::Train);
    if (y.shape() != cudarts::Shape{2, 8, 6, 6}) {
      std::fprintf(stderr, "consumer: conv output %s, expected [2, 8, 6, 6]\n",
                   y.describe().c_str());
      return 1;
    }
    cudarts::Tensor dy = cudarts::Tensor::full(ctx, y.shape(), 1.0f);
    conv.zero_grad(ctx);
    cudarts::Tensor dx = conv.backward(ctx, dy);
    if (dx.shape() != x.shape()) {
      std::fprintf(stderr, "consumer: dx %s, expected the input's shape\n", dx.describe().c_str());
      return 1;
    }
    // With dy = 1 the bias gradient is the number of output positions: 2 * 6 * 6.
    for (float g : conv.bias()->grad.to_vector()) {
      if (g != 72.0f) {
        std::fprintf(stderr, "consumer: bias gradient %g, expected 72\n", g);
        return 1;
      }
    }
    // A StepGraph from outside the library: capture a scale of the caller's own memory
    // (Tensor::wrap), replay it twice.
    float own[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    cudarts::Tensor w =
        cudarts::Tensor::wrap(own, cudarts::Shape{4}, cudarts::DType::F32, cudarts::Device::cpu());
    cudarts::StepGraph graph(ctx);
    graph.capture([&] { cudarts::ops::scale(ctx, w, 2.0f, w); });
    graph.replay();
    graph.replay();
    if (own[0] != 4.0f || own[3] != 16.0f) {
      std::fprintf(stderr, "consumer: graph replays gave %g %g, expected 4 16\n", own[0], own[3]);
      return 1;
    }
    std::printf("consumer: ok (%s -> %s, cuda compiled: %s)\n", x.describe().c_str(),
                y.describe().c_str(), cudarts::Context::cuda_compiled() ? "yes" : "no");
    return 0;
  } catch (const cudarts::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
