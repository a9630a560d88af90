// The DARTS pipeline end to end on the CPU, on generated Fashion-MNIST-format files: a search
// writes a valid genotype.json and log.jsonl; a run killed mid-epoch and resumed ends with the
// same genotype and the same logged numbers as an uninterrupted run; retraining runs; an
// output folder holding a run is never overwritten without --resume.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cudarts/hardware.h"
#include "cudarts/inference.h"
#include "cudarts/nb201.h"
#include "test_util.h"

namespace cudarts {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// IDX files of 28x28 images: a centred 20x20 square whose brightness encodes the class, over
// noise. Learnable in a few steps, and robust to the crops, flips and cutout of training.
void write_fake_fashion_mnist(const fs::path& dir, int n_train, int n_test) {
  fs::create_directories(dir);
  auto write_gz = [](const fs::path& p, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen(p.string().c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    gzclose(f);
  };
  auto header = [](std::vector<uint8_t>& b, std::vector<uint32_t> dims) {
    b = {0, 0, 8, uint8_t(dims.size())};
    for (uint32_t d : dims)
      for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
  };
  for (auto [stem, n] : {std::pair<const char*, int>{"train", n_train}, {"t10k", n_test}}) {
    std::vector<uint8_t> images, labels;
    header(images, {uint32_t(n), 28, 28});
    header(labels, {uint32_t(n)});
    uint32_t rng = 12345u + uint32_t(n);
    for (int i = 0; i < n; ++i) {
      const int label = i % 10;
      labels.push_back(uint8_t(label));
      for (int r = 0; r < 28; ++r)
        for (int c = 0; c < 28; ++c) {
          rng = rng * 1664525u + 1013904223u;
          const bool on = r >= 4 && r < 24 && c >= 4 && c < 24;
          images.push_back(uint8_t(on ? 25 * label + 10 + (rng >> 29) : (rng >> 29)));
        }
    }
    write_gz(dir / (std::string(stem) + "-images-idx3-ubyte.gz"), images);
    write_gz(dir / (std::string(stem) + "-labels-idx1-ubyte.gz"), labels);
  }
}

class DartsRun : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cudarts_darts_run_XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    write_fake_fashion_mnist(dir_ / "data", 192, 64);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  darts::SearchOptions search(const std::string& out) const {
    darts::SearchOptions o;
    o.data.dir = (dir_ / "data").string();
    o.run.out_dir = (dir_ / out).string();
    o.run.device = "cpu";
    o.run.seed = 7;
    o.run.quiet = true;
    o.net.channels = 2;
    o.net.cells = 3;  // normal, reduction, reduction
    o.net.steps = 2;
    o.net.multiplier = 2;
    o.epochs = 2;
    o.batch = 16;  // 96 + 96 images: 6 steps per epoch
    o.lr = 0.05f;
    return o;
  }

 public:
  static std::vector<json> read_log(const fs::path& p) {
    std::ifstream f(p);
    std::vector<json> rows;
    std::string line;
    while (std::getline(f, line))
      if (!line.empty()) rows.push_back(json::parse(line));
    return rows;
  }
  static std::string read(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

TEST_F(DartsRun, SearchWritesGenotypeLogSummaryAndCheckpoint) {
  const darts::SearchOptions o = search("run");
  const darts::RunResult r = darts::run_search(o);
  EXPECT_EQ(r.epochs_done, 2);
  const fs::path out = o.run.out_dir;
  for (const char* f :
       {"log.jsonl", "genotype.json", "genotype.py", "summary.txt", "checkpoint.safetensors"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  const darts::Genotype g = darts::Genotype::from_json(read(out / "genotype.json"));
  EXPECT_EQ(g.normal.size(), 4u);  // 2 nodes x 2 inputs
  EXPECT_EQ(g.normal_concat, (std::vector<int>{2, 3}));
  EXPECT_EQ(darts::Genotype::from_python(read(out / "genotype.py"), "genotype"), g);
  const auto rows = read_log(out / "log.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  for (const char* key : {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "seconds",
                          "peak_bytes", "alphas"})
    EXPECT_TRUE(rows[1].contains(key)) << key;
  EXPECT_EQ(rows[1]["epoch"], 2);
  const auto& normal = rows[1]["alphas"]["normal"];
  ASSERT_EQ(normal.size(), 5u);  // 2 + 3 edges
  for (const auto& edge : normal) {
    ASSERT_EQ(edge.size(), 8u);
    double s = 0;
    for (double p : edge) s += p;
    EXPECT_NEAR(s, 1.0, 1e-5);
  }
  EXPECT_GT(rows[1]["peak_bytes"].get<double>(), 0.0);
  EXPECT_NE(read(out / "summary.txt").find("ContinuousMixedOp"), std::string::npos);
}

// Everything logged except wall-clock time and the allocator peak (a resumed process has not
// seen the peak of the steps before its start).
json comparable(json row) {
  row.erase("seconds");
  row.erase("peak_bytes");
  return row;
}

void expect_same_run(const fs::path& a, const fs::path& b) {
  const auto ra = DartsRun::read_log(a / "log.jsonl");
  const auto rb = DartsRun::read_log(b / "log.jsonl");
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t i = 0; i < ra.size(); ++i)
    EXPECT_EQ(comparable(ra[i]).dump(), comparable(rb[i]).dump()) << "epoch " << i + 1;
}

TEST_F(DartsRun, ResumedRunEqualsUninterruptedRun) {
  for (auto type : {std::string("continuous"), std::string("moving-average")}) {
    SCOPED_TRACE(mixed_op_type_name(type));
    const std::string tag = type == std::string("continuous") ? "c" : "ma";
    darts::SearchOptions full = search("full_" + tag);
    full.net.mixed.method = type;
    full.net.mixed.num_eval = 3;
    full.run.checkpoint_every = 2;
    darts::run_search(full);

    // Killed at step 3 of epoch 1 (last checkpoint after step 2), resumed, killed again at
    // step 5 of epoch 2 (checkpoint after step 4), resumed to the end.
    darts::SearchOptions cut = full;
    cut.run.out_dir = (dir_ / ("cut_" + tag)).string();
    cut.run.max_steps = 3;
    EXPECT_EQ(darts::run_search(cut).epochs_done, 0);
    cut.run.resume = true;
    cut.run.max_steps = 6;
    EXPECT_EQ(darts::run_search(cut).epochs_done, 1);
    cut.run.max_steps = -1;
    EXPECT_EQ(darts::run_search(cut).epochs_done, 2);

    EXPECT_EQ(read(fs::path(full.run.out_dir) / "genotype.json"),
              read(fs::path(cut.run.out_dir) / "genotype.json"));
    expect_same_run(full.run.out_dir, cut.run.out_dir);
  }
}

// A PC-DARTS search (partial channels, edge normalisation) killed mid-epoch and resumed logs
// the uninterrupted run's numbers: the betas are in the checkpoint; its log holds the edge
// weights, and its genotype is the DARTS derivation from alpha times them.
TEST_F(DartsRun, PcDartsSearchResumesExactly) {
  darts::SearchOptions full = search("pc_full");
  full.net.channels = 4;
  full.net.partial_channels = 2;
  full.net.edge_normalization = true;
  full.run.checkpoint_every = 2;
  darts::run_search(full);
  darts::SearchOptions cut = full;
  cut.run.out_dir = (dir_ / "pc_cut").string();
  cut.run.max_steps = 3;
  darts::run_search(cut);
  cut.run.resume = true;
  cut.run.max_steps = -1;
  EXPECT_EQ(darts::run_search(cut).epochs_done, 2);
  expect_same_run(full.run.out_dir, cut.run.out_dir);
  EXPECT_EQ(read(fs::path(full.run.out_dir) / "genotype.json"),
            read(fs::path(cut.run.out_dir) / "genotype.json"));
  const auto rows = read_log(fs::path(full.run.out_dir) / "log.jsonl");
  ASSERT_TRUE(rows[1].contains("edge_weights"));
  const auto& normal = rows[1]["alphas"]["normal"];
  const auto& w = rows[1]["edge_weights"]["normal"];
  ASSERT_EQ(w.size(), 5u);
  std::vector<std::vector<float>> scaled_n, scaled_r;
  for (size_t e = 0; e < 5; ++e) {
    scaled_n.emplace_back();
    scaled_r.emplace_back();
    for (size_t i = 0; i < 8; ++i) {
      scaled_n.back().push_back(normal[e][i].get<float>() * w[e].get<float>());
      scaled_r.back().push_back(rows[1]["alphas"]["reduce"][e][i].get<float>() *
                                rows[1]["edge_weights"]["reduce"][e].get<float>());
    }
  }
  EXPECT_EQ(darts::Genotype::from_json(read(fs::path(full.run.out_dir) / "genotype.json")),
            darts::derive_genotype(scaled_n, scaled_r, 2));
}

// GDAS-FRC end to end: a GDAS search with fixed reduction cells logs and derives only the
// normal cell, writes a genotype with reduce_cell "gdas_frc", and that genotype retrains.
TEST_F(DartsRun, GdasFrcSearchAndRetrain) {
  darts::SearchOptions o = search("frc");
  o.net.channels = 4;
  o.net.steps = 4;
  o.net.multiplier = 4;
  o.net.fixed_reduction = true;
  o.net.mixed.method = "gdas";
  o.epochs = 1;
  EXPECT_EQ(darts::run_search(o).epochs_done, 1);
  const auto rows = read_log(fs::path(o.run.out_dir) / "log.jsonl");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["alphas"]["normal"].size(), 14u);
  EXPECT_TRUE(rows[0]["alphas"]["reduce"].empty());
  const fs::path gpath = fs::path(o.run.out_dir) / "genotype.json";
  const darts::Genotype g = darts::Genotype::from_json(read(gpath));
  EXPECT_EQ(g.reduce_cell, "gdas_frc");
  EXPECT_EQ(g.normal.size(), 8u);
  darts::TrainOptions t;
  t.data.dir = (dir_ / "data").string();
  t.run.out_dir = (dir_ / "frc_train").string();
  t.run.device = "cpu";
  t.run.quiet = true;
  t.genotype_path = gpath.string();
  t.net.channels = 4;
  t.net.cells = 3;
  t.epochs = 1;
  t.batch = 32;
  EXPECT_EQ(darts::run_train(t).epochs_done, 1);
  EXPECT_EQ(read_log(fs::path(t.run.out_dir) / "log.jsonl").size(), 1u);
}

// A search with every anti-collapse regulariser, from the options a CLI run sets: the monitors
// of each epoch agree with the logged alphas (recomputed here), the schedules are logged, the
// genotype respects the skip cap, and the same search graphed equals it eagerly.
TEST_F(DartsRun, RegularizedSearchLogsItsMonitors) {
  darts::SearchOptions o = search("reg");
  o.epochs = 3;
  o.regularizers.beta_decay = 6.0f;
  o.regularizers.auxiliary_skip = 1.0f;
  o.regularizers.max_skips = 0;
  darts::run_search(o);
  const auto rows = read_log(fs::path(o.run.out_dir) / "log.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  for (int e = 0; e < 3; ++e) {
    const json& r = rows[size_t(e)];
    EXPECT_FLOAT_EQ(r["auxiliary_skip_weight"].get<float>(), 1.0f - float(e) / 3.0f);
    EXPECT_FLOAT_EQ(r["beta_decay"]["coefficient"].get<float>(), 6.0f * float(e) / 3.0f);
    // mean_e logsumexp(alpha_e) with alphas near 0 (1e-3 N(0, 1), a few Adam steps of 3e-4):
    // close to log K.
    EXPECT_NEAR(r["beta_decay"]["value"].get<double>(), std::log(8.0), 0.05);
    for (const char* cell : {"normal", "reduce"}) {
      double free = 0;  // none, max_pool_3x3, avg_pool_3x3, skip_connect: entries 0-3
      std::vector<std::vector<float>> p;
      for (const auto& edge : r["alphas"][cell]) {
        p.push_back(edge.get<std::vector<float>>());
        free += p.back()[0] + p.back()[1] + p.back()[2] + p.back()[3];
      }
      EXPECT_NEAR(r["parameter_free"][cell].get<double>(), free / double(p.size()), 1e-6);
      const darts::Genotype g = darts::derive_genotype(p, p, 2);
      int skips = 0;
      for (const auto& gene : g.normal) skips += gene.first == "skip_connect";
      EXPECT_EQ(r["skips"][cell].get<int>(), skips) << cell;
    }
  }
  const darts::Genotype g =
      darts::Genotype::from_json(read(fs::path(o.run.out_dir) / "genotype.json"));
  for (const auto* cell : {&g.normal, &g.reduce})
    for (const auto& gene : *cell) EXPECT_NE(gene.first, "skip_connect");
  darts::SearchOptions graphed = o;
  graphed.run.out_dir = (dir_ / "reg_graphed").string();
  graphed.run.cuda_graph = true;
  darts::run_search(graphed);
  expect_same_run(o.run.out_dir, graphed.run.out_dir);
  // beta-decay alone: its coefficient is 0 in the first epoch, so that epoch's numbers are the
  // unregularised run's bit for bit, and the later epochs' alphas are not.
  darts::SearchOptions plain = search("reg_plain"), decay = search("reg_decay");
  plain.epochs = decay.epochs = 2;
  decay.regularizers.beta_decay = 50.0f;
  darts::run_search(plain);
  darts::run_search(decay);
  const auto p = read_log(fs::path(plain.run.out_dir) / "log.jsonl");
  const auto d = read_log(fs::path(decay.run.out_dir) / "log.jsonl");
  EXPECT_EQ(p[0]["alphas"], d[0]["alphas"]);
  EXPECT_EQ(p[0]["train_loss"], d[0]["train_loss"]);
  EXPECT_NE(p[1]["alphas"], d[1]["alphas"]);
  EXPECT_FALSE(p[0].contains("beta_decay") || p[0].contains("auxiliary_skip_weight"));
  darts::SearchOptions bad = o;
  bad.run.out_dir = (dir_ / "reg_bad").string();
  bad.regularizers.auxiliary_skip_decay = "step";
  EXPECT_THROW(darts::run_search(bad), ConfigError);
  EXPECT_FALSE(fs::exists(bad.run.out_dir));
}

// R-DARTS's monitor: computing the eigenvalue changes nothing else in the run (every other
// logged number equals the run without it); a killed-and-resumed monitored run equals the
// uninterrupted one; the early stop ends the run exactly where the logged eigenvalues say it
// should, and a resume of a stopped run trains no further.
TEST_F(DartsRun, HessianMonitorAndEarlyStop) {
  darts::SearchOptions plain = search("h_plain");
  plain.epochs = 3;
  darts::SearchOptions mon = plain;
  mon.run.out_dir = (dir_ / "h_mon").string();
  mon.hessian.every = 1;
  mon.hessian.batches = 1;
  mon.run.checkpoint_every = 2;
  darts::run_search(plain);
  darts::run_search(mon);
  const auto p = read_log(fs::path(plain.run.out_dir) / "log.jsonl");
  const auto m = read_log(fs::path(mon.run.out_dir) / "log.jsonl");
  ASSERT_EQ(m.size(), 3u);
  for (size_t e = 0; e < 3; ++e) {
    ASSERT_TRUE(m[e].contains("hessian_eigenvalue"));
    EXPECT_TRUE(std::isfinite(m[e]["hessian_eigenvalue"].get<double>()));
    json without = comparable(m[e]);
    without.erase("hessian_eigenvalue");
    without.erase("early_stop");
    EXPECT_EQ(without.dump(), comparable(p[e]).dump()) << "epoch " << e + 1;
  }
  darts::SearchOptions cut = mon;
  cut.run.out_dir = (dir_ / "h_cut").string();
  cut.run.max_steps = 8;  // epoch 2, step 3 (checkpoint after step 2)
  darts::run_search(cut);
  cut.run.max_steps = -1;
  cut.run.resume = true;
  darts::run_search(cut);
  expect_same_run(mon.run.out_dir, cut.run.out_dir);

  darts::SearchOptions stop = mon;
  stop.run.out_dir = (dir_ / "h_stop").string();
  stop.epochs = 4;
  stop.hessian.stop_factor = 1.0f;  // stop as soon as the eigenvalue rises above its minimum
  const darts::RunResult r = darts::run_search(stop);
  const auto s = read_log(fs::path(stop.run.out_dir) / "log.jsonl");
  size_t expect = 4;
  double lowest = 0;
  for (size_t e = 0; e < s.size(); ++e) {
    // Magnitudes at float precision (the checkpoint's), the first one the minimum itself.
    const double l = double(float(std::abs(s[e]["hessian_eigenvalue"].get<double>())));
    if (e == 0 || l < lowest) lowest = l;
    if (lowest > 0 && l > lowest) {
      expect = e + 1;
      break;
    }
  }
  std::printf("[ measured ] eigenvalues:");
  for (const auto& row : s) std::printf(" %.4g", row["hessian_eigenvalue"].get<double>());
  std::printf(" -> %zu of 4 epochs\n", s.size());
  EXPECT_EQ(s.size(), expect);
  EXPECT_EQ(r.epochs_done, int(expect));
  EXPECT_EQ(r.stopped_early, expect < 4);
  EXPECT_EQ(s.back().contains("early_stop"), expect < 4);
  EXPECT_LT(expect, 4u) << "the eigenvalues never rose: the early stop went untested";
  stop.run.resume = true;
  const darts::RunResult again = darts::run_search(stop);
  EXPECT_EQ(again.epochs_done, int(expect));
  EXPECT_EQ(read_log(fs::path(stop.run.out_dir) / "log.jsonl").size(), expect);

  darts::SearchOptions bad = mon;
  bad.run.out_dir = (dir_ / "h_bad").string();
  bad.net.mixed.method = "binary";
  EXPECT_THROW(darts::run_search(bad), ConfigError);
  bad.net.mixed.method = "continuous";
  bad.hessian.stop_factor = 0.5f;
  EXPECT_THROW(darts::run_search(bad), ConfigError);
  EXPECT_FALSE(fs::exists(bad.run.out_dir));
}

// NAS-Bench-201 end to end: a search logs its one cell kind (6 edges of 5 candidates) and
// writes the benchmark's string; a killed-and-resumed search equals the uninterrupted one;
// the string retrains; DARTS-space options are refused before anything is written.
TEST_F(DartsRun, Nb201SearchResumesAndRetrains) {
  darts::SearchOptions o = search("nb");
  o.space = "nb201";
  o.net.channels = 4;
  o.net.cells = 1;  // per stage
  o.run.checkpoint_every = 2;
  darts::run_search(o);
  const auto rows = read_log(fs::path(o.run.out_dir) / "log.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  const auto& cell = rows[1]["alphas"]["cell"];
  ASSERT_EQ(cell.size(), 6u);
  std::vector<std::vector<float>> p;
  double free = 0;  // none, skip_connect, avg_pool_3x3: entries 0, 1, 4
  for (const auto& e : cell) {
    p.push_back(e.get<std::vector<float>>());
    ASSERT_EQ(p.back().size(), 5u);
    free += p.back()[0] + p.back()[1] + p.back()[4];
  }
  EXPECT_NEAR(rows[1]["parameter_free"]["cell"].get<double>(), free / 6, 1e-6);
  const json g = json::parse(read(fs::path(o.run.out_dir) / "genotype.json"));
  const std::string arch = g.at("nb201");
  EXPECT_EQ(arch, nb201::derive(p).str());
  EXPECT_EQ(read(fs::path(o.run.out_dir) / "arch.txt"), arch + "\n");

  darts::SearchOptions cut = o;
  cut.run.out_dir = (dir_ / "nb_cut").string();
  cut.run.max_steps = 3;
  darts::run_search(cut);
  cut.run.max_steps = -1;
  cut.run.resume = true;
  darts::run_search(cut);
  expect_same_run(o.run.out_dir, cut.run.out_dir);

  darts::TrainOptions t;
  t.space = "nb201";
  t.data.dir = (dir_ / "data").string();
  t.run.out_dir = (dir_ / "nb_train").string();
  t.run.device = "cpu";
  t.run.quiet = true;
  t.genotype_path = (fs::path(o.run.out_dir) / "arch.txt").string();
  t.net.channels = 4;
  t.net.cells = 1;
  t.net.auxiliary = false;
  t.drop_path = 0.0f;
  t.epochs = 1;
  t.batch = 32;
  EXPECT_EQ(darts::run_train(t).epochs_done, 1);
  EXPECT_EQ(json::parse(read(fs::path(t.run.out_dir) / "genotype.json")).at("nb201"), arch);
  darts::TrainOptions aux = t;
  aux.run.out_dir = (dir_ / "nb_train_aux").string();
  aux.net.auxiliary = true;
  EXPECT_THROW(darts::run_train(aux), ConfigError);
  aux.net.auxiliary = false;
  aux.genotype_path = (fs::path(o.run.out_dir) / "summary.txt").string();
  EXPECT_THROW(darts::run_train(aux), InputError);
  EXPECT_FALSE(fs::exists(aux.run.out_dir));
  darts::SearchOptions bad = o;
  bad.run.out_dir = (dir_ / "nb_bad").string();
  bad.net.edge_normalization = true;
  EXPECT_THROW(darts::run_search(bad), ConfigError);
  bad.net.edge_normalization = false;
  bad.space = "nb101";
  EXPECT_THROW(darts::run_search(bad), ConfigError);
  EXPECT_FALSE(fs::exists(bad.run.out_dir));
}

// Hardware-aware search on a toy space: raising the cost weight (parameters) moves the derived
// architecture monotonically toward cheaper cells; each epoch logs the expected and derived
// costs; the run's cost table is written once and a killed-and-resumed run reads it back
// (the same numbers as the uninterrupted run).
TEST_F(DartsRun, CostPenaltyMovesTowardCheaperCells) {
  std::vector<double> derived;
  for (float weight : {0.0f, 0.3f, 30.0f}) {
    darts::SearchOptions o = search("cost" + std::to_string(int(weight * 10)));
    o.net.channels = 4;
    o.epochs = 3;
    o.arch_lr = 3e-3f;
    o.cost.metric = "params";
    o.cost.weight = weight;
    darts::run_search(o);
    const auto rows = read_log(fs::path(o.run.out_dir) / "log.jsonl");
    if (weight == 0.0f) {
      EXPECT_FALSE(rows.back().contains("expected_cost"));
      // The weight-0 run's genotype priced with the table of the next run (same network).
      derived.push_back(-1);
      continue;
    }
    ASSERT_TRUE(rows.back().contains("expected_cost"));
    EXPECT_TRUE(fs::exists(fs::path(o.run.out_dir) / "cost_table.json"));
    derived.push_back(rows.back()["derived_cost"].get<double>());
    if (derived[0] < 0) {  // price the weight-0 genotype with this table
      Context ctx;
      const darts::CostTable t =
          darts::CostTable::from_json(read(fs::path(o.run.out_dir) / "cost_table.json"));
      darts::SearchConfig cfg = o.net;
      cfg.in_channels = 1;
      SearchModel model(ctx, std::make_unique<darts::SearchNetwork>(ctx, "net", cfg));
      darts::ExpectedCost cost(ctx, model, static_cast<darts::SearchNetwork&>(model.network()), t,
                               "params");
      derived[0] =
          cost.genotype_cost(darts::Genotype::from_json(read(dir_ / "cost0" / "genotype.json")));
    }
    if (weight == 30.0f) {  // killed and resumed: the table is read back, the numbers equal
      darts::SearchOptions cut = o;
      cut.run.out_dir = (dir_ / "cost_cut").string();
      cut.run.max_steps = 8;
      darts::run_search(cut);
      const std::string table = read(fs::path(cut.run.out_dir) / "cost_table.json");
      cut.run.max_steps = -1;
      cut.run.resume = true;
      darts::run_search(cut);
      EXPECT_EQ(read(fs::path(cut.run.out_dir) / "cost_table.json"), table);
      expect_same_run(o.run.out_dir, cut.run.out_dir);  // (parameters: the same in any table)
    }
  }
  std::printf("[ measured ] derived cost (k params) at weights 0, 0.3, 30: %.4f %.4f %.4f\n",
              derived[0], derived[1], derived[2]);
  EXPECT_GE(derived[0], derived[1]);
  EXPECT_GE(derived[1], derived[2]);
  EXPECT_LT(derived[2], derived[0]);
}

// The step captured in a StepGraph once per epoch and replayed (--cuda-graph; on the CPU
// backend, the emulation with CUDA-graph semantics) gives the eager run's numbers exactly,
// including a resume from a mid-epoch checkpoint.
TEST_F(DartsRun, GraphedSearchEqualsEagerSearch) {
  darts::SearchOptions eager = search("eager");
  eager.warmup_epochs = 1;  // the capture of epoch 2 must take the architecture step
  eager.run.checkpoint_every = 2;
  eager.batch = 20;  // 4 steps per epoch; validation: 4 full batches (graph) + 16 (eager)
  darts::run_search(eager);
  darts::SearchOptions graphed = eager;
  graphed.run.out_dir = (dir_ / "graphed").string();
  graphed.run.cuda_graph = true;
  graphed.run.max_steps = 5;  // killed in epoch 2, resumed from the end of epoch 1
  EXPECT_EQ(darts::run_search(graphed).epochs_done, 1);
  graphed.run.resume = true;
  graphed.run.max_steps = -1;
  EXPECT_EQ(darts::run_search(graphed).epochs_done, 2);
  EXPECT_EQ(read(fs::path(eager.run.out_dir) / "genotype.json"),
            read(fs::path(graphed.run.out_dir) / "genotype.json"));
  expect_same_run(eager.run.out_dir, graphed.run.out_dir);

  darts::SearchOptions binary = search("binary_graph");
  binary.net.mixed.method = std::string("binary");
  binary.run.cuda_graph = true;
  try {
    darts::run_search(binary);
    ADD_FAILURE() << "--cuda-graph with sampled MixedOps should be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--cuda-graph needs MixedOps whose step can be captured"),
              std::string::npos)
        << e.what();
  }
}

// --second-order runs end to end (its gradient is checked against finite differences in
// test_darts), moves the alphas differently from first order, and is refused where it
// cannot apply.
TEST_F(DartsRun, SecondOrderSearch) {
  darts::SearchOptions first = search("first");
  first.epochs = 1;
  darts::run_search(first);
  darts::SearchOptions second = first;
  second.run.out_dir = (dir_ / "second").string();
  second.second_order = true;
  EXPECT_EQ(darts::run_search(second).epochs_done, 1);
  const auto rf = read_log(fs::path(first.run.out_dir) / "log.jsonl");
  const auto rs = read_log(fs::path(second.run.out_dir) / "log.jsonl");
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_NE(rf[0]["alphas"].dump(), rs[0]["alphas"].dump());
  EXPECT_TRUE(darts::Genotype::from_json(read(fs::path(second.run.out_dir) / "genotype.json"))
                  .normal.size() == 4u);
  for (int variant = 0; variant < 2; ++variant) {
    darts::SearchOptions bad = second;
    bad.run.out_dir = (dir_ / ("bad" + std::to_string(variant))).string();
    if (variant == 0) bad.bilevel = false;
    if (variant == 1) bad.run.cuda_graph = true;
    try {
      darts::run_search(bad);
      ADD_FAILURE() << "variant " << variant << " should be refused";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--second-order"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(bad.run.out_dir)) << "refused before anything is written";
  }
}

// Each pass computing only the gradients its step uses (the default) changes no number: for
// every MixedOp type and every kind of step (bilevel first order, joint, warm-up, second
// order), the logs, genotypes and checkpoints (weights, BatchNorm statistics, alphas, moving
// averages, optimizer states) equal those of runs that compute every gradient, byte for byte.
TEST_F(DartsRun, SkippedGradientsChangeNoNumber) {
  struct Case {
    const char* tag;
    std::string type;
    bool bilevel, second_order;
    int warmup;
  };
  const std::vector<Case> cases = {
      {"continuous", std::string("continuous"), true, false, 0},
      {"continuous_joint", std::string("continuous"), false, false, 0},
      {"continuous_warmup", std::string("continuous"), true, false, 1},
      {"continuous_joint_warmup", std::string("continuous"), false, false, 1},
      {"second_order", std::string("continuous"), true, true, 0},
      {"binary", std::string("binary"), true, false, 0},
      {"binary_joint", std::string("binary"), false, false, 0},
      {"masked", std::string("masked"), true, false, 0},
      {"proxyless", std::string("proxyless"), true, false, 0},
      {"proxyless_joint", std::string("proxyless"), false, false, 0},
      {"moving_average", std::string("moving-average"), true, false, 0},
      {"moving_average_joint", std::string("moving-average"), false, false, 0},
      {"gdas", std::string("gdas"), true, false, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.tag);
    darts::SearchOptions skip = search(std::string("skip_") + c.tag);
    skip.net.mixed.method = c.type;
    skip.net.mixed.num_eval = 3;
    skip.bilevel = c.bilevel;
    skip.second_order = c.second_order;
    skip.warmup_epochs = c.warmup;
    darts::SearchOptions all = skip;
    all.run.out_dir = (dir_ / (std::string("all_") + c.tag)).string();
    all.skip_unused_gradients = false;
    darts::run_search(skip);
    darts::run_search(all);
    const fs::path a = skip.run.out_dir, b = all.run.out_dir;
    expect_same_run(a, b);
    EXPECT_EQ(read(a / "genotype.json"), read(b / "genotype.json"));
    EXPECT_TRUE(read(a / "checkpoint.safetensors") == read(b / "checkpoint.safetensors"))
        << "checkpoints differ";
  }
}

// A damaged checkpoint is refused with an InputError naming the file and what fails, and the
// run's files (log.jsonl, genotype.json, summary.txt, the checkpoint) are left exactly as they
// were: inverted data bytes, a flipped bit in the stored epoch, flips in the metadata that keep
// the outer JSON valid, in the safetensors header, truncation, a log that does not match.
TEST_F(DartsRun, DamagedCheckpointsAreRefusedAndNothingIsOverwritten) {
  darts::SearchOptions o = search("ck");
  o.run.max_steps = 6;  // stopped after epoch 1 (6 steps) of 2
  EXPECT_EQ(darts::run_search(o).epochs_done, 1);
  o.run.max_steps = -1;
  o.run.resume = true;
  const fs::path out = o.run.out_dir, ck = out / "checkpoint.safetensors";
  const std::string clean = read(ck);
  struct Damage {
    const char* what;
    std::function<void(std::string&)> apply;
    const char* expect;
  };
  auto find = [](const std::string& s, const std::string& needle) {
    const size_t at = s.find(needle);
    EXPECT_NE(at, std::string::npos) << needle;
    return at == std::string::npos ? size_t(0) : at;
  };
  const std::vector<Damage> damages = {
      {"4 data bytes inverted (the data section ends the file)",
       [](std::string& b) {
         for (size_t i = 0; i < 4; ++i) b[b.size() - 64 + i] = char(~b[b.size() - 64 + i]);
       },
       "checksum mismatch in tensor"},
      {"stored epoch 1 -> 0 (one bit)",
       [&](std::string& b) { b[find(b, "\\\"epoch\\\":1") + 10] ^= 1; },
       "checksum mismatch in the metadata"},
      {"'{' -> '[' at the start of the inner object",
       [&](std::string& b) { b[find(b, "\"cudarts\":\"{") + 11] = '['; },
       "checksum mismatch in the metadata"},
      {"key epoch -> epoci", [&](std::string& b) { b[find(b, "\\\"epoch\\\"") + 6] = 'i'; },
       "checksum mismatch in the metadata"},
      {"a shape digit in the header",
       [&](std::string& b) {
         const size_t at = find(b, "\"shape\":[");
         b[at + 9] = b[at + 9] == '1' ? '2' : '1';
       },
       "'"},
      {"truncated", [](std::string& b) { b.resize(b.size() - 100); }, "'"},
      {"header length field", [](std::string& b) { b[0] = char(0xff); }, "JSON header"},
  };
  const std::string log = read(out / "log.jsonl"), genotype = read(out / "genotype.json"),
                    summary = read(out / "summary.txt");
  for (const Damage& d : damages) {
    SCOPED_TRACE(d.what);
    std::string bytes = clean;
    d.apply(bytes);
    ASSERT_NE(bytes, clean);
    write_file_atomic(ck.string(), bytes);
    try {
      darts::run_search(o);
      ADD_FAILURE() << "resumed from a damaged checkpoint";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(ck.string()), std::string::npos) << msg;
      EXPECT_NE(msg.find(d.expect), std::string::npos) << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an InputError: " << e.what();
    }
    EXPECT_EQ(read(ck), bytes);
    EXPECT_EQ(read(out / "log.jsonl"), log);
    EXPECT_EQ(read(out / "genotype.json"), genotype);
    EXPECT_EQ(read(out / "summary.txt"), summary);
  }
  // An intact checkpoint whose log lost its line is refused too.
  write_file_atomic(ck.string(), clean);
  write_file_atomic((out / "log.jsonl").string(), "");
  EXPECT_TRUE(test::throws_with([&] { darts::run_search(o); }, {"log.jsonl", "holds 0 epochs"}));
  write_file_atomic((out / "log.jsonl").string(), log);
  EXPECT_EQ(darts::run_search(o).epochs_done, 2);  // the clean checkpoint resumes
}

// A checkpoint write that fails half-way (the file-size limit hit inside write()) throws and
// leaves the previous checkpoint in place, complete and loadable.
TEST_F(DartsRun, FailedCheckpointWriteKeepsThePreviousOne) {
  const fs::path path = dir_ / "ck.safetensors";
  TensorMap small, big;
  small["a"].shape = {4};
  small["a"].f32 = {1, 2, 3, 4};
  big["a"].shape = {1 << 20};
  big["a"].f32.assign(1 << 20, 0.5f);
  save_safetensors(path.string(), small, {{"k", "v"}});
  const std::string before = read(path);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // child: a 64 KiB file-size limit; the 4 MiB write fails part-way
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{64 << 10, 64 << 10};
    setrlimit(RLIMIT_FSIZE, &lim);
    try {
      save_safetensors(path.string(), big);
    } catch (const Error&) {
      _exit(0);  // the expected failure
    }
    _exit(1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the failing write did not throw";
  EXPECT_EQ(read(path), before);
  std::map<std::string, std::string> md;
  const TensorMap back = load_safetensors(path.string(), &md, true);
  EXPECT_EQ(back.at("a").f32, small["a"].f32);
  EXPECT_EQ(md.at("k"), "v");
}

// A run that diverges (lr 1e9) stops with a DivergenceError naming the step and quantity;
// nothing from the diverged steps is on disk: no log line, genotype or summary, and the
// checkpoint that exists (written after a step before the divergence) is complete, verifies
// and holds only finite values. darts_train behaves the same.
TEST_F(DartsRun, DivergingRunsStopAndWriteNothingFromTheDivergedSteps) {
  darts::SearchOptions o = search("diverge");
  o.lr = 1e9f;
  o.run.checkpoint_every = 1;
  try {
    darts::run_search(o);
    ADD_FAILURE() << "a diverging search ended normally";
  } catch (const DivergenceError& e) {
    // Either the guard (a non-finite loss or gradient norm at a step) or the last line of
    // defence (a checkpoint about to hold non-finite statistics) stops it, naming where.
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("is not finite at epoch 1 step") != std::string::npos ||
                msg.find("the checkpoint of epoch 0 step") != std::string::npos)
        << msg;
    EXPECT_NE(msg.find("learning rate"), std::string::npos) << msg;
  }
  const fs::path out = o.run.out_dir;
  EXPECT_FALSE(fs::exists(out / "log.jsonl"));
  EXPECT_FALSE(fs::exists(out / "genotype.json"));
  EXPECT_FALSE(fs::exists(out / "summary.txt"));
  if (fs::exists(out / "checkpoint.safetensors")) {
    const TensorMap t = load_safetensors((out / "checkpoint.safetensors").string(), nullptr, true);
    for (const auto& [name, h] : t)
      for (float v : h.f32) ASSERT_TRUE(std::isfinite(v)) << name;
  }

  // Skip mode on a healthy run: the same numbers as the default mode, 0 skipped steps logged.
  darts::SearchOptions a = search("healthy"), b = search("healthy_skip");
  a.epochs = b.epochs = 1;
  b.run.skip_nonfinite = true;
  darts::run_search(a);
  darts::run_search(b);
  expect_same_run(a.run.out_dir, b.run.out_dir);
  EXPECT_EQ(read_log(fs::path(b.run.out_dir) / "log.jsonl")[0]["skipped_steps"], 0);

  darts::Genotype g;
  g.normal = {{"sep_conv_3x3", 0}, {"skip_connect", 1}, {"dil_conv_3x3", 2}, {"max_pool_3x3", 0}};
  g.reduce = g.normal;
  g.normal_concat = g.reduce_concat = {2, 3};
  write_file_atomic((dir_ / "g.json").string(), g.to_json());
  darts::TrainOptions t;
  t.data.dir = (dir_ / "data").string();
  t.run.out_dir = (dir_ / "train_diverge").string();
  t.run.device = "cpu";
  t.run.quiet = true;
  t.genotype_path = (dir_ / "g.json").string();
  t.net.channels = 4;
  t.net.cells = 3;
  t.epochs = 2;
  t.batch = 32;
  t.lr = 1e9f;
  EXPECT_THROW(darts::run_train(t), DivergenceError);
  EXPECT_FALSE(fs::exists(fs::path(t.run.out_dir) / "log.jsonl"));
  EXPECT_FALSE(fs::exists(fs::path(t.run.out_dir) / "checkpoint.safetensors"));
}

TEST_F(DartsRun, ExistingRunIsNotOverwrittenWithoutResume) {
  darts::SearchOptions o = search("keep");
  o.epochs = 1;
  darts::run_search(o);
  const std::string before = read(fs::path(o.run.out_dir) / "log.jsonl");
  try {
    darts::run_search(o);
    ADD_FAILURE() << "a second run into the same folder should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read(fs::path(o.run.out_dir) / "log.jsonl"), before);
  // A resume with a different configuration is refused too.
  o.run.resume = true;
  o.net.channels = 4;
  EXPECT_THROW(darts::run_search(o), Error);
  EXPECT_EQ(read(fs::path(o.run.out_dir) / "log.jsonl"), before);
}

TEST_F(DartsRun, RetrainsAGenotype) {
  darts::Genotype g;
  g.normal = {{"sep_conv_3x3", 0}, {"skip_connect", 1}, {"dil_conv_3x3", 2}, {"max_pool_3x3", 0}};
  g.reduce = {{"max_pool_3x3", 0}, {"avg_pool_3x3", 1}, {"skip_connect", 2}, {"sep_conv_5x5", 1}};
  g.normal_concat = g.reduce_concat = {2, 3};
  const fs::path gpath = dir_ / "genotype.json";
  write_file_atomic(gpath.string(), g.to_json());
  darts::TrainOptions o;
  o.data.dir = (dir_ / "data").string();
  o.run.out_dir = (dir_ / "train").string();
  o.run.device = "cpu";
  o.run.quiet = true;
  o.genotype_path = gpath.string();
  o.net.channels = 4;
  o.net.cells = 3;
  o.epochs = 8;  // 48 steps: enough for the BatchNorm running statistics used in evaluation
  o.batch = 32;
  o.lr = 0.05f;
  const darts::RunResult r = darts::run_train(o);
  EXPECT_EQ(r.epochs_done, 8);
  const auto rows = read_log(fs::path(o.run.out_dir) / "log.jsonl");
  ASSERT_EQ(rows.size(), 8u);
  std::printf("[ measured ] retrain on the synthetic task: train acc %.3f, test acc %.3f\n",
              rows[7]["train_acc"].get<double>(), rows[7]["valid_acc"].get<double>());
  EXPECT_GT(rows[7]["train_acc"].get<double>(), 0.3);  // chance is 0.1 on 10 classes
  EXPECT_GT(rows[7]["valid_acc"].get<double>(), 0.3);
  {  // Shipped: the run folder loaded for inference gives the run's own test accuracy, and its
     // graph replays give the eager logits bit for bit.
    Context ctx(Device::cpu());
    Dataset test = load_dataset("fashion-mnist", (dir_ / "data").string(), false);
    darts::Classifier c(ctx, o.run.out_dir, test.c, test.num_classes);
    test = c.prepare(test);
    std::vector<int64_t> idx(size_t(test.n));
    std::iota(idx.begin(), idx.end(), 0);
    const Batch all = make_batch(ctx, test, idx);
    const std::vector<float> eager = c.logits(ctx, all.images).to_vector();
    int64_t hits = 0;
    for (int64_t i = 0; i < test.n; ++i) {
      const auto row = eager.begin() + i * 10;
      hits += std::max_element(row, row + 10) - row == test.labels[size_t(i)];
    }
    EXPECT_DOUBLE_EQ(double(hits) / double(test.n), rows[7]["valid_acc"].get<double>());
    c.set_use_graph(true);
    EXPECT_EQ(c.logits(ctx, all.images).to_vector(), eager);                     // captured
    EXPECT_EQ(c.logits(ctx, all.images).to_vector(), eager);                     // replayed
    EXPECT_THROW(darts::Classifier(ctx, o.run.out_dir, test.c, 7), InputError);  // classes
    EXPECT_THROW(darts::Classifier(ctx, (dir_ / "nowhere").string(), 1, 10), InputError);
  }
  // The same retraining with the step replayed from a StepGraph (drop-path masks, cutout and
  // crops drawn afresh at each replay; the drop-path probability recaptured each epoch).
  darts::TrainOptions graphed = o;
  graphed.run.out_dir = (dir_ / "train_graphed").string();
  graphed.run.cuda_graph = true;
  graphed.epochs = 3;
  darts::TrainOptions eager = graphed;
  eager.run.out_dir = (dir_ / "train_eager").string();
  eager.run.cuda_graph = false;
  darts::run_train(graphed);
  darts::run_train(eager);
  expect_same_run(eager.run.out_dir, graphed.run.out_dir);
  // DARTS_V2 from its published Python notation, picked from a genotypes.py by name.
  const fs::path py = dir_ / "genotypes.py";
  write_file_atomic(
      py.string(),
      "from collections import namedtuple\n"
      "Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')\n"
      "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
      "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
      "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
      "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
      "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, "
      "5])\nDARTS = DARTS_V2\n");
  darts::TrainOptions v2 = o;
  v2.run.out_dir = (dir_ / "train_v2").string();
  v2.genotype_path = py.string();
  v2.genotype_name = "DARTS";
  v2.epochs = 1;
  EXPECT_EQ(darts::run_train(v2).epochs_done, 1);
  const darts::Genotype written =
      darts::Genotype::from_json(read(fs::path(v2.run.out_dir) / "genotype.json"));
  EXPECT_EQ(written.normal[7], (std::pair<std::string, int>{"dil_conv_3x3", 2}));
  EXPECT_EQ(written.reduce[2], (std::pair<std::string, int>{"skip_connect", 2}));
  v2.run.out_dir = (dir_ / "train_v2_unnamed").string();
  v2.genotype_name.clear();  // a file of several genotypes needs the name
  EXPECT_THROW(darts::run_train(v2), InputError);
  EXPECT_FALSE(fs::exists(v2.run.out_dir));
  o.genotype_path = (dir_ / "missing.json").string();
  EXPECT_THROW(darts::run_train(o), Error);
}

}  // namespace
}  // namespace cudarts
