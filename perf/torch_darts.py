#!/usr/bin/env python3
"""PyTorch twin of the cudarts DARTS search network.

check: rebuild the network of a darts_export file in PyTorch (same primitives, names and
defaults), load cudarts' weights, alphas and BatchNorm statistics, run the same batch in
float64 (the reference) and float32, and compare cudarts' logits, loss, every weight
gradient, the alpha gradients and the updated running statistics with the float64 result
(normalised error ||a - b|| / ||b||). Forward quantities must agree to 1e-4. Some weight
gradients jump when a ReLU input lies within rounding of zero, so gradients are judged against
the float32 noise floor (PyTorch float32 with the weights perturbed by ~1 ulp): median error,
number of tensors above 1e-4, largest error.
An independent check of the whole network: PyTorch's autograd against cudarts' hand-written
backward passes.

bench: time one first-order DARTS search iteration (alpha step on a validation batch, weight
step on a training batch) in PyTorch eager and, where available, with CUDA graphs, on the
GPU, with DARTS defaults (batch 64, C = 16, 8 cells, 32x32).

Usage: torch_darts.py check FILE [--device cpu|cuda]
       torch_darts.py bench [--device cuda|cpu --batch 64 --channels 16 --cells 8 --size 32 --iters 20]
"""
import argparse
import json
import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    def __init__(self, c_in, c_out, affine):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def relu_conv_bn(c_in, c_out, k, stride, pad, affine):
    return nn.Sequential(OrderedDict([
        ("relu", nn.ReLU(inplace=False)),
        ("conv", nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False)),
        ("bn", nn.BatchNorm2d(c_out, affine=affine))]))


def dw_pw_bn(c, k, stride, pad, dil, affine, suffix):
    return [("relu" + suffix, nn.ReLU(inplace=False)),
            ("dw" + suffix, nn.Conv2d(c, c, k, stride, pad, dilation=dil, groups=c, bias=False)),
            ("pw" + suffix, nn.Conv2d(c, c, 1, bias=False)),
            ("bn" + suffix, nn.BatchNorm2d(c, affine=affine))]


def primitive(name, c, stride, affine, search):
    if name == "none":
        return Zero(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride, 1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
        if not search:
            return pool
        return nn.Sequential(OrderedDict([("pool", pool), ("bn", nn.BatchNorm2d(c, affine=False))]))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv"):
        k = 3 if name.endswith("3x3") else 5
        return nn.Sequential(OrderedDict(dw_pw_bn(c, k, stride, k // 2, 1, affine, "1") +
                                         dw_pw_bn(c, k, 1, k // 2, 1, affine, "2")))
    k = 3 if name.endswith("3x3") else 5
    return nn.Sequential(OrderedDict(dw_pw_bn(c, k, stride, k - 1, 2, affine, "")))


class MixedOp(nn.ModuleDict):
    def __init__(self, c, stride):
        super().__init__(OrderedDict((p, primitive(p, c, stride, False, True)) for p in PRIMITIVES))

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.values()))


class Cell(nn.Module):
    def __init__(self, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.pre0 = (FactorizedReduce(c_pp, c, False) if reduction_prev
                     else relu_conv_bn(c_pp, c, 1, 1, 0, False))
        self.pre1 = relu_conv_bn(c_p, c, 1, 1, 0, False)
        k = 0
        for i in range(steps):
            for j in range(2 + i):
                self.add_module("edge%d" % k, MixedOp(c, 2 if reduction and j < 2 else 1))
                k += 1

    def forward(self, s0, s1, weights):
        states = [self.pre0(s0), self.pre1(s1)]
        k = 0
        for i in range(self.steps):
            s = 0
            for j, h in enumerate(states):
                s = s + getattr(self, "edge%d" % k)(h, weights[k])
                k += 1
            states.append(s)
        return torch.cat(states[-self.multiplier:], dim=1)


class SearchNetwork(nn.Module):
    def __init__(self, c=16, num_classes=10, cells=8, in_channels=3, steps=4, multiplier=4,
                 stem_multiplier=3):
        super().__init__()
        c_curr = stem_multiplier * c
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(c_curr))]))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        reduction_prev = False
        self.cell_names = []
        for i in range(cells):
            reduction = i in (cells // 3, 2 * cells // 3)
            if reduction:
                c_curr *= 2
            self.add_module("cell%d" % i, Cell(steps, multiplier, c_pp, c_p, c_curr, reduction,
                                               reduction_prev))
            self.cell_names.append(("cell%d" % i, reduction))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.classifier = nn.Linear(c_p, num_classes)
        edges = steps * (steps + 3) // 2
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(edges, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(PRIMITIVES)))

    def forward(self, x):
        s0 = s1 = self.stem(x)
        wn = F.softmax(self.alphas_normal, dim=-1)
        wr = F.softmax(self.alphas_reduce, dim=-1)
        for name, reduction in self.cell_names:
            s0, s1 = s1, getattr(self, name)(s0, s1, wr if reduction else wn)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def normalized_error(a, b):
    den = b.norm().item()
    return (a - b).norm().item() / (den if den > 0 else 1.0)


def run_twin(t, meta, device, dtype):
    """Forward and backward of the exported step in PyTorch at `dtype`; returns the network."""
    net = SearchNetwork(c=int(meta["channels"]), num_classes=int(meta["classes"]),
                        cells=int(meta["cells"]), in_channels=int(meta["in_channels"]))
    state = {}
    for name, _ in net.named_parameters():
        if not name.startswith("alphas_"):
            state[name] = t["param/net." + name]
    for name, _ in net.named_buffers():
        if not name.endswith("num_batches_tracked"):
            state[name] = t["buffer/net." + name]
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [m for m in missing
               if not m.endswith("num_batches_tracked") and not m.startswith("alphas_")]
    if missing or unexpected:
        raise SystemExit("name mismatch: missing %s unexpected %s" % (missing[:5], unexpected[:5]))
    with torch.no_grad():
        net.alphas_normal.copy_(t["alpha/normal"])
        net.alphas_reduce.copy_(t["alpha/reduce"])
    net = net.to(device=device, dtype=dtype)
    net.train()
    logits = net(t["input"].to(device=device, dtype=dtype))
    loss = F.cross_entropy(logits, t["labels"].long().to(device))
    loss.backward()
    net.logits_, net.loss_ = logits.detach(), loss.detach().reshape(1)
    return net


def quantities(net, t, ours):
    """Name -> tensor for the network's results (ours=True: cudarts' exported values)."""
    q = OrderedDict()
    q["logits"] = t["logits"] if ours else net.logits_
    q["loss"] = t["loss"] if ours else net.loss_
    q["alpha_normal.grad"] = t["grad_alpha/normal"] if ours else net.alphas_normal.grad
    q["alpha_reduce.grad"] = t["grad_alpha/reduce"] if ours else net.alphas_reduce.grad
    for name, p in net.named_parameters():
        if not name.startswith("alphas_"):
            q["grad " + name] = t["grad/net." + name] if ours else p.grad
    for name, b in net.named_buffers():
        if not name.endswith("num_batches_tracked"):
            q["stat " + name] = t["buffer_after/net." + name] if ours else b
    return OrderedDict((k, v.detach().double().cpu()) for k, v in q.items())


def check(path, device):
    from safetensors.torch import load_file
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    t = load_file(path)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = quantities(run_twin(t, meta, device, torch.float64), t, False)
    net32 = run_twin(t, meta, device, torch.float32)
    f32 = quantities(net32, t, False)
    ours = quantities(net32, t, True)
    # The float32 noise floor: PyTorch float32 with every weight perturbed by ~1 ulp. Some
    # gradients jump when a ReLU input lies within rounding of zero, so a few tensors differ
    # by up to ~1e-2 between any two float32 implementations; a bug shows as many tensors off.
    gen = torch.Generator().manual_seed(0)
    tp = dict(t)
    for k in tp:
        if k.startswith("param/"):
            tp[k] = tp[k] * (1 + 2e-7 * torch.randn(tp[k].shape, generator=gen))
    pert = quantities(run_twin(tp, meta, device, torch.float32), tp, False)

    err = {k: (normalized_error(ours[k], ref[k]), normalized_error(f32[k], ref[k]),
               normalized_error(pert[k], ref[k])) for k in ref}
    forward = [k for k in err if k in ("logits", "loss") or k.startswith("stat ")]
    grads = [k for k in err if k.startswith("grad ")]
    alphas = [k for k in err if k.startswith("alpha_")]
    failed = []
    for k in forward:
        if not err[k][0] <= 1e-4:
            failed.append("%s: %.3e > 1e-4" % (k, err[k][0]))
    for k in alphas:
        if not err[k][0] <= max(1e-4, 10 * err[k][1], 10 * err[k][2]):
            failed.append("%s: %.3e (torch float32 %.3e, perturbed %.3e)" % ((k,) + err[k]))
    g = sorted(err[k][0] for k in grads)
    big_ours = sum(1 for k in grads if err[k][0] > 1e-4)
    big_pert = sum(1 for k in grads if err[k][2] > 1e-4)
    gp = sorted(err[k][2] for k in grads)
    median = g[len(g) // 2] if g else 0.0
    median_pert = gp[len(gp) // 2] if gp else 0.0
    if median > max(1e-5, 3 * median_pert):
        failed.append("median weight-gradient error %.3e > max(1e-5, 3 x perturbed float32 %.3e)"
                      % (median, median_pert))
    if big_ours > 2 * big_pert + 2:
        failed.append("%d weight gradients above 1e-4 (perturbed float32: %d)" % (big_ours, big_pert))
    if g and g[-1] > 5e-2:
        failed.append("largest weight-gradient error %.3e > 5e-2" % g[-1])

    print("%-26s %13s %13s %13s" % ("quantity (worst)", "cudarts", "torch f32", "f32 perturbed"))
    for label, keys in (("logits, loss", ["logits", "loss"]), ("running statistics", [k for k in forward if k.startswith("stat ")]),
                        ("alpha gradients", alphas), ("weight gradients", grads)):
        if keys:
            k = max(keys, key=lambda q: err[q][0])
            print("%-26s %13.3e %13.3e %13.3e  %s" % ((label,) + err[k] + (k,)))
    print("weight gradients: %d tensors; median error cudarts %.2e, perturbed float32 %.2e; above "
          "1e-4: cudarts %d, perturbed float32 %d" % (len(grads), median, median_pert, big_ours,
                                                     big_pert))
    for f in failed[:10]:
        print("FAIL " + f)
    print("torch_darts check: %s (%d quantities; cudarts %s vs PyTorch %s float64 on %s)" %
          ("FAILED" if failed else "ok", len(ref), meta.get("device"), torch.__version__, device))
    return 1 if failed else 0


def bench(args):
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("bench --device cuda needs a GPU")
        return 1
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    net = SearchNetwork(c=args.channels, cells=args.cells).to(dev)
    weights = [p for n, p in net.named_parameters() if not n.startswith("alphas_")]
    alphas = [net.alphas_normal, net.alphas_reduce]
    w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    # capturable: Adam keeps its step count on the device, so the step can be a CUDA graph.
    a_opt = torch.optim.Adam(alphas, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3,
                             capturable=bool(args.cuda_graph and dev == "cuda"))
    s = args.size
    xt = torch.randn(args.batch, 3, s, s, device=dev)
    yt = torch.randint(0, 10, (args.batch,), device=dev)
    xv = torch.randn(args.batch, 3, s, s, device=dev)
    yv = torch.randint(0, 10, (args.batch,), device=dev)

    def step():
        a_opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(xv), yv).backward()
        a_opt.step()
        w_opt.zero_grad(set_to_none=False)
        F.cross_entropy(net(xt), yt).backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()

    def timed(fn, iters):
        for _ in range(3):
            fn()
        times = []
        for _ in range(iters):
            if dev == "cuda":
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(1000.0 * (time.perf_counter() - t0))
        times.sort()
        return times[len(times) // 2]

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    eager = timed(step, args.iters)
    result = {"torch": torch.__version__, "device": dev, "channels": args.channels,
              "cells": args.cells, "batch": args.batch, "size": s, "eager_ms": eager}
    if dev == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
        result["eager_peak_bytes"] = torch.cuda.max_memory_allocated()
    else:
        result["threads"] = torch.get_num_threads()
    print(json.dumps(result), flush=True)  # the eager result first: compiling can take minutes
    if args.cuda_graph and dev == "cuda":
        # The whole iteration captured with torch.cuda.graph (warm-up on a side stream first,
        # as the PyTorch documentation prescribes) and replayed.
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            torch.cuda.reset_peak_memory_stats()
            with torch.cuda.graph(graph):
                step()
            result["graph_ms"] = timed(graph.replay, args.iters)
            result["graph_peak_bytes"] = torch.cuda.max_memory_allocated()
        except Exception as e:  # capture can fail for some PyTorch versions / ops
            result["graph_error"] = str(e)[:200]
        print(json.dumps(result), flush=True)
    if args.compile:
        try:
            compiled = torch.compile(step)
            result["compile_ms"] = timed(compiled, args.iters)
        except Exception as e:  # torch.compile may be unavailable for this graph
            result["compile_error"] = str(e)[:200]
        print(json.dumps(result))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("file")
    c.add_argument("--device", default="cpu")
    b = sub.add_parser("bench")
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--channels", type=int, default=16)
    b.add_argument("--cells", type=int, default=8)
    b.add_argument("--iters", type=int, default=20)
    b.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    b.add_argument("--size", type=int, default=32)
    b.add_argument("--threads", type=int, default=2, help="CPU threads (--device cpu)")
    b.add_argument("--compile", action="store_true", help="also time torch.compile (slow to build)")
    b.add_argument("--cuda-graph", action="store_true",
                   help="also time the iteration captured in a CUDA graph (torch.cuda.graph)")
    args = ap.parse_args()
    return check(args.file, args.device) if args.cmd == "check" else bench(args)


if __name__ == "__main__":
    sys.exit(main())
