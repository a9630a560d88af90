// The collectives' front door in one process (cudarts/comm.h): the local communicator, the
// checks every backend shares, the timeout setting and the state checksum. The multi-process
// behaviour is ctest `mpi` (tests/mpi/).
#include <gtest/gtest.h>

#include <cstdlib>

#include <cudarts/cudarts.h>

using namespace cudarts;

TEST(Comm, LocalCommunicatorIsOneRankAndChangesNothing) {
  Context ctx(Device::cpu(), ContextOptions{1});
  Communicator& c = ctx.communicator();  // nothing attached: the local one
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_FALSE(c.distributed());
  EXPECT_STREQ(c.backend(), "local");
  Tensor t = Tensor::from_vector(ctx, Shape{3}, {1.5f, -2.0f, 4.0f});
  c.all_reduce(ctx, t, ReduceOp::Sum);
  c.all_reduce(ctx, t, ReduceOp::Mean);
  c.broadcast(ctx, t, 0);
  EXPECT_EQ(t.to_vector(), (std::vector<float>{1.5f, -2.0f, 4.0f}));
  std::vector<double> h{2.5};
  c.all_reduce_host(h);
  EXPECT_EQ(h[0], 2.5);
  EXPECT_EQ(c.all_gather_host(42), std::vector<uint64_t>{42});
  EXPECT_THROW(c.broadcast(ctx, t, 1), Error);  // root outside the ranks
  Tensor labels = Tensor::from_vector_i32(ctx, Shape{2}, {1, 2});
  try {
    c.all_reduce(ctx, labels, ReduceOp::Sum);
    FAIL() << "an int32 tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float32"), std::string::npos) << e.what();
  }
}

TEST(Comm, WorldWithoutALauncherIsLocal) {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) GTEST_SKIP() << "running under an MPI launcher (" << v << ")";
  EXPECT_FALSE(launched_by_mpi());
  EXPECT_STREQ(world_communicator()->backend(), "local");
  finish_job(3);  // one process: returns (nothing to abort)
}

TEST(Comm, TimeoutSettingIsChecked) {
  ::unsetenv("CUDARTS_COMM_TIMEOUT");
  EXPECT_EQ(comm_timeout_seconds(), 600.0);
  ::setenv("CUDARTS_COMM_TIMEOUT", "2.5", 1);
  EXPECT_EQ(comm_timeout_seconds(), 2.5);
  for (const char* bad : {"abc", "-1", "0", "3s"}) {
    ::setenv("CUDARTS_COMM_TIMEOUT", bad, 1);
    EXPECT_THROW(comm_timeout_seconds(), ConfigError) << bad;
  }
  ::unsetenv("CUDARTS_COMM_TIMEOUT");
}

// The CRC-32 that ranks compare: zlib's over the float bytes, tensor after tensor (the value
// computed independently with Python's zlib.crc32 over struct.pack('<6f', ...)).
TEST(Comm, StateChecksumIsCrc32OfTheBytes) {
  Context ctx(Device::cpu(), ContextOptions{1});
  const Tensor a = Tensor::from_vector(ctx, Shape{2, 2}, {1.0f, -2.5f, 0.0f, 3.25f});
  const Tensor b = Tensor::from_vector(ctx, Shape{2}, {7.0f, 8.0f});
  EXPECT_EQ(tensors_crc32({&a, &b}), 4000551515u);
  EXPECT_NE(tensors_crc32({&b, &a}), 4000551515u);
}

// Synchronised BatchNorm on one process is BatchNorm: forward, running statistics, input and
// parameter gradients against the unsynchronised layer (an independent implementation, itself
// checked against naive loops and finite differences), and its moments against hand values.
TEST(Comm, SynchronisedBatchNormOnOneProcessIsBatchNorm) {
  Context ctx(Device::cpu(), ContextOptions{4});
  const Shape xs{3, 4, 5, 5};
  const Tensor x = Tensor::from_vector(ctx, xs, draw_uniform(1, 0, xs.numel(), -2.0f, 3.0f));
  const Tensor dy = Tensor::from_vector(ctx, xs, draw_uniform(2, 0, xs.numel(), -1.0f, 1.0f));
  BatchNorm2d plain(ctx, "plain", 4, true), sync(ctx, "sync", 4, true);
  sync.set_synchronized(true);
  for (BatchNorm2d* b : {&plain, &sync}) {
    copy_from_host(ctx, HostTensor{{4}, DType::F32, {0.5f, 1.0f, 2.0f, -1.0f}, {}},
                   b->gamma()->value, "gamma");
    copy_from_host(ctx, HostTensor{{4}, DType::F32, {0.1f, 0.0f, -0.3f, 2.0f}, {}},
                   b->beta()->value, "beta");
    b->zero_grad(ctx);
  }
  const Tensor y0 = plain.forward(ctx, x, Mode::Train), y1 = sync.forward(ctx, x, Mode::Train);
  const Tensor d0 = plain.backward(ctx, dy), d1 = sync.backward(ctx, dy);
  auto close = [](const Tensor& a, const Tensor& b, const char* what) {
    const std::vector<float> va = a.to_vector(), vb = b.to_vector();
    ASSERT_EQ(va.size(), vb.size());
    for (size_t i = 0; i < va.size(); ++i)
      EXPECT_NEAR(va[i], vb[i], 1e-5 * (1.0 + std::abs(va[i]))) << what << " " << i;
  };
  close(y0, y1, "y");
  close(d0, d1, "dx");
  close(plain.gamma()->grad, sync.gamma()->grad, "dgamma");
  close(plain.beta()->grad, sync.beta()->grad, "dbeta");
  close(plain.running_mean(), sync.running_mean(), "running_mean");
  close(plain.running_var(), sync.running_var(), "running_var");

  // moments of x = {1, 2, 3, 6} in one channel about shift 1: {0+1+2+5, 0+1+4+25} = {8, 30};
  // finish over 4 values: mean 1 + 2 = 3, variance 30/4 - 2^2 = 3.5.
  const Tensor v = Tensor::from_vector(ctx, Shape{1, 1, 2, 2}, {1.0f, 2.0f, 3.0f, 6.0f});
  const Tensor shift = Tensor::full(ctx, Shape{1}, 1.0f);
  Tensor m = Tensor::empty(ctx, Shape{2, 1});
  ops::batchnorm_moments(ctx, v, shift, m);
  EXPECT_EQ(m.to_vector(), (std::vector<float>{8.0f, 30.0f}));
  Tensor mean = Tensor::empty(ctx, Shape{1}), var = Tensor::empty(ctx, Shape{1}),
         invstd = Tensor::empty(ctx, Shape{1});
  ops::batchnorm_moments_finish(ctx, m, shift, 4.0, mean, var, invstd, nullptr, nullptr,
                                BatchNormParams{0.1f, 0.5f});
  EXPECT_FLOAT_EQ(mean.item(), 3.0f);
  EXPECT_FLOAT_EQ(var.item(), 3.5f);
  EXPECT_FLOAT_EQ(invstd.item(), 0.5f);  // 1 / sqrt(3.5 + 0.5)
}
