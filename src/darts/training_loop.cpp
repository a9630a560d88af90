// The one training loop of the pipeline (training_loop.h): epochs of steps over prefetched
// batches, device-side metrics, progress with ETA, the divergence guard, StepGraph capture and
// replay, mid-epoch and epoch-end checkpoints, exact resume, log.jsonl.
#include "training_loop.h"

namespace cudarts::darts {

RunResult run_loop(Context& ctx, const RunOptions& run, int epochs, TrainingTask& task) {
  const std::string program = task.program();
  const int64_t steps = task.steps_per_epoch();
  const json config = task.config();
  const NamedOptimizers opts = task.optimizers();
  Layer& net = task.network();
  Communicator& comm = ctx.communicator();
  const bool lead = comm.rank() == 0;
  // Only rank 0 prints (and writes: every file operation below is under `lead`).
  RunOptions shown = run;
  shown.quiet = run.quiet || !lead;

  int start_epoch = 0;
  int64_t start_step = 0;
  Metrics metrics(ctx);
  Checkpoint ck;
  if (run.resume && Checkpoint::load(run, ck)) {
    std::tie(start_epoch, start_step) =
        get_common(ctx, ck, net, opts, metrics, run, config, epochs, steps);
    task.get(ctx, ck);
    // The checkpoint holds the job's metric sums: rank 0 carries them on, the others restart
    // from zero, so the next reduction counts them once.
    if (!lead) metrics = Metrics(ctx);
    comm.barrier();  // every rank has read the files before rank 0 changes them
    if (lead) truncate_log(run, start_epoch);  // everything restored: now files may change
    if (!shown.quiet)
      std::printf("%s: resuming at epoch %d step %lld\n", program.c_str(), start_epoch + 1,
                  (long long)start_step);
  } else if (run.resume && !shown.quiet) {
    std::printf("%s: no checkpoint in '%s', starting fresh\n", program.c_str(),
                run.out_dir.c_str());
  }
  task.begin_run(ctx, start_epoch == 0 && start_step == 0);
  auto make_checkpoint = [&](int epoch, int64_t step) {
    Checkpoint c;
    if (comm.distributed() && step > 0) {  // mid-epoch: the job's partial sums, not this rank's
      Metrics job(ctx);
      ops::copy(ctx, metrics.sums, job.sums);
      reduce_metrics(ctx, job.sums);
      put_common(c, ctx, net, opts, job, epoch, step, config);
    } else {
      put_common(c, ctx, net, opts, metrics, epoch, step, config);
    }
    task.put(c);
    return c;
  };
  // Weights and architecture are identical on every rank after every step (averaged gradients,
  // the same optimizer state); BatchNorm statistics are per rank and averaged at epoch ends.
  std::vector<Tensor*> buffers;
  std::vector<const Tensor*> state;
  for (auto& [name, p] : net.named_parameters()) state.push_back(&p->value);
  for (auto& [name, b] : net.named_buffers()) {
    buffers.push_back(b);
    state.push_back(b);
  }
  Tensor buffer_scratch;
  if (run.sync_batchnorm && comm.distributed()) {
    std::vector<Layer*> todo{&net};
    while (!todo.empty()) {
      Layer* l = todo.back();
      todo.pop_back();
      if (auto* bn = dynamic_cast<BatchNorm2d*>(l)) bn->set_synchronized(true);
      for (Layer* c : l->children()) todo.push_back(c);
    }
  }

  ProgressLine progress(shown, int64_t(epochs) * steps, int64_t(start_epoch) * steps + start_step);
  int64_t steps_here = 0;
  RunResult result;
  result.epochs_done = start_epoch;
  StepRunner runner(ctx, run.cuda_graph);
  RunGuard guard(ctx, run, program, task.watched_names(), steps,
                 int64_t(start_epoch) * steps + start_step);

  for (int epoch = start_epoch; epoch < epochs; ++epoch) {
    if (task.stopped()) {
      result.stopped_early = true;
      if (!shown.quiet)
        std::printf("%s: stopped early after epoch %d of %d (see log.jsonl)\n", program.c_str(),
                    epoch, epochs);
      break;
    }
    runner.restart();
    const auto t0 = Clock::now();
    ctx.allocator().reset_peak();
    task.begin_epoch(ctx, epoch);
    const int64_t bad_before = guard.bad_steps();
    const int64_t first = epoch == start_epoch ? start_step : 0;
    std::vector<std::unique_ptr<BatchPrefetcher>> streams;
    for (auto& b : task.batches(epoch, first)) {
      if (comm.distributed())  // each rank loads its share of every batch
        for (auto& step_batch : b) step_batch = rank_share(step_batch, comm);
      streams.push_back(std::make_unique<BatchPrefetcher>(ctx, task.data(), std::move(b)));
    }
    for (int64_t s = first; s < steps; ++s) {
      if (run.max_steps >= 0 && steps_here >= run.max_steps) return result;  // a "kill"
      std::vector<Batch> batches;
      std::vector<const Tensor*> inputs;
      for (auto& pf : streams) batches.push_back(pf->next(ctx));
      for (Batch& b : batches) {
        inputs.push_back(&b.images);
        inputs.push_back(&b.labels);
      }
      runner.run(inputs, [&](const std::vector<const Tensor*>& in) {
        guard.watch(ctx, task.step(ctx, in, epoch, runner));
      });
      metrics.add(ctx, runner.loss, runner.hits, batches.back().labels.numel());
      ++steps_here;
      progress.update(epoch, epochs, s, steps, int64_t(epoch) * steps + s + 1, metrics,
                      task.batch(), guard);
      if (run.checkpoint_every > 0 && (s + 1) % run.checkpoint_every == 0 && s + 1 < steps) {
        guard.check();
        const Checkpoint mid = make_checkpoint(epoch, s + 1);
        if (lead) mid.save(run, program);
      }
    }
    guard.check();
    if (comm.distributed()) {
      reduce_metrics(ctx, metrics.sums);
      comm.all_reduce_many(ctx, buffers, ReduceOp::Mean, buffer_scratch);
    }
    const Metrics::Values train = metrics.read();
    const EvalResult eval = task.evaluate(ctx, epoch);
    eval.check(program, task.eval_name(), epoch);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    json line = {{"epoch", epoch + 1},
                 {"train_loss", train.loss},
                 {"train_acc", train.acc},
                 {"valid_loss", eval.loss},
                 {"valid_acc", eval.acc},
                 {"seconds", seconds},
                 {"peak_bytes", ctx.allocator().stats().peak_bytes},
                 {"lr", task.lr(epoch)},
                 {"skipped_steps", guard.bad_steps() - bad_before}};
    task.end_epoch(ctx, epoch, line);
    if (comm.distributed()) {
      // Proof that the ranks agree: the CRC-32 of every weight, alpha and statistic.
      const uint64_t crc = tensors_crc32(state);
      const std::vector<uint64_t> all = comm.all_gather_host(crc);
      for (size_t r = 1; r < all.size(); ++r)
        CUDARTS_CHECK(all[r] == all[0], program, ": after epoch ", epoch + 1, " rank ", r,
                      " holds other weights than rank 0 (CRC-32 ", all[r], " vs ", all[0],
                      "); the ranks diverged, stopped before writing that epoch");
      if (comm.size() > 1) line["ranks"] = comm.size();
    }
    metrics = Metrics(ctx);
    const Checkpoint ck_end = make_checkpoint(epoch + 1, 0);
    ck_end.verify(program);  // before the log line that belongs with it
    if (lead) {
      append_log(run, line);
      task.write_epoch_files(epoch);
      ck_end.save(run, program);
    }
    result.epochs_done = epoch + 1;
    result.final_train_acc = train.acc;
    result.final_valid_acc = eval.acc;
    if (!shown.quiet)
      std::printf(
          "epoch %d/%d: train loss %.4f acc %.4f, %s %.4f acc %.4f, %.1f s, peak %.1f MiB\n",
          epoch + 1, epochs, train.loss, train.acc, task.eval_name(), eval.loss, eval.acc, seconds,
          double(ctx.allocator().stats().peak_bytes) / (1 << 20));
    std::fflush(stdout);
  }
  return result;
}

}  // namespace cudarts::darts
