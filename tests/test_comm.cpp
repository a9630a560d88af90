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
