#!/usr/bin/env python3
"""Turns a darts_search (or darts_train) output folder into PNG plots.

  scripts/plot_search.py RUN_DIR [--out DIR]

Writes into RUN_DIR (or --out):
  curves.png        train/validation loss and accuracy per epoch (log.jsonl)
  alphas_normal.png softmax(alpha) of every normal-cell edge over the epochs
  alphas_reduce.png the same for the reduction cell (not for a fixed reduction cell)
  alphas_cell.png   the NAS-Bench-201 cell's edges (--space nb201)
  monitors.png      collapse monitors: alpha mass on parameter-free ops, skips of the genotype,
                    the Hessian's dominant eigenvalue and the regularisers' schedules (when logged)
  normal.png, reduce.png  the cells of genotype.json drawn as graphs (Graphviz 'dot')

Needs Debian's python3-matplotlib and graphviz (scripts/setup.sh installs both).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
NB201_PRIMITIVES = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def cell_kinds(rows):
    """The cell kinds logged: normal and reduce (DARTS space) or cell (NAS-Bench-201)."""
    return [k for k in ("normal", "reduce", "cell") if rows and k in rows[0].get("alphas", {})]


def read_log(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit("%s:%d: not a JSON object (%s)" % (path, n, e))
    return rows


def plot_curves(rows, out, plt):
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    a.plot(epochs, [r["valid_loss"] for r in rows], "o-", label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [r["train_acc"] for r in rows], "o-", label="train")
    b.plot(epochs, [r["valid_acc"] for r in rows], "o-", label="validation")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_alphas(rows, kind, out, plt):
    if not rows or "alphas" not in rows[0] or not rows[0]["alphas"].get(kind):
        return False  # no alphas logged, or a fixed (unsearched) reduction cell
    edges = len(rows[0]["alphas"][kind])
    names = NB201_PRIMITIVES if kind == "cell" else PRIMITIVES
    cols = 4
    fig, axes = plt.subplots((edges + cols - 1) // cols, cols, figsize=(14, 2.6 * ((edges + cols - 1) // cols)),
                             squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for e in range(edges):
        ax = axes[e // cols][e % cols]
        for k, name in enumerate(names):
            ax.plot(epochs, [r["alphas"][kind][e][k] for r in rows], label=name)
        ax.set_title("%s edge %d" % (kind, e), fontsize=9)
        ax.axhline(1.0 / len(names), color="lightgray", linewidth=0.8)  # uniform
        ax.tick_params(labelsize=7)
    for e in range(edges, len(axes) * cols):
        axes[e // cols][e % cols].axis("off")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def plot_monitors(rows, out, plt):
    if not rows or "parameter_free" not in rows[0]:
        return False
    epochs = [r["epoch"] for r in rows]
    extra = [k for k in ("hessian_eigenvalue", "beta_decay", "auxiliary_skip_weight")
             if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, 2 + len(extra), figsize=(5 * (2 + len(extra)), 3.6), squeeze=False)
    a, b = axes[0][0], axes[0][1]
    for kind in cell_kinds(rows):
        if kind in rows[0]["parameter_free"]:
            a.plot(epochs, [r["parameter_free"][kind] for r in rows], "o-", label=kind)
            b.plot(epochs, [r["skips"][kind] for r in rows], "o-", label=kind)
    a.set_title("alpha mass on parameter-free ops", fontsize=10)
    b.set_title("skip connections in the genotype", fontsize=10)
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    for ax, key in zip(axes[0][2:], extra):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        if key == "beta_decay":
            ax.plot([e for e, _ in pts], [v["value"] for _, v in pts], "o-", label="mean logsumexp")
            ax.plot([e for e, _ in pts], [v["coefficient"] for _, v in pts], "o-", label="coefficient")
            ax.legend(fontsize=8)
        else:
            ax.plot([e for e, _ in pts], [v for _, v in pts], "o-")
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def draw_cell(genes, concat, out_png):
    if shutil.which("dot") is None:
        print("plot_search: graphviz 'dot' not found; skipping", out_png)
        return False
    lines = ["digraph cell {", "rankdir=LR;", 'node [shape=box, style="rounded,filled", fontsize=11];',
             '"c_{k-2}" [fillcolor=darkseagreen2];', '"c_{k-1}" [fillcolor=darkseagreen2];']
    steps = len(genes) // 2
    for i in range(steps):
        lines.append('"%d" [fillcolor=lightblue];' % i)
    names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(steps)]
    for i in range(steps):
        for op, j in genes[2 * i:2 * i + 2]:
            lines.append('"%s" -> "%d" [label="%s", fontsize=10];' % (names[j], i, op))
    lines.append('"c_{k}" [fillcolor=palegoldenrod];')
    for c in concat:
        lines.append('"%s" -> "c_{k}" [color=gray];' % names[c])
    lines.append("}")
    subprocess.run(["dot", "-Tpng", "-o", out_png], input="\n".join(lines).encode(), check=True)
    return True


def main():
    ap = argparse.ArgumentParser(description="Plots of a darts_search run folder")
    ap.add_argument("run_dir")
    ap.add_argument("--out", help="output folder (default: the run folder)")
    args = ap.parse_args()
    out = args.out or args.run_dir
    os.makedirs(out, exist_ok=True)
    log = os.path.join(args.run_dir, "log.jsonl")
    if not os.path.exists(log):
        sys.exit("plot_search: %s not found (is '%s' a darts_search --out folder?)" % (log, args.run_dir))
    try:
        import matplotlib
    except ImportError:
        # Debian's python3-matplotlib lives in the system interpreter; another python3 (pyenv,
        # a venv) may come first on PATH.
        if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        sys.exit("plot_search: matplotlib not found (sudo apt-get install python3-matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_log(log)
    written = []
    if rows:
        plot_curves(rows, os.path.join(out, "curves.png"), plt)
        written.append("curves.png")
        for kind in cell_kinds(rows):
            if plot_alphas(rows, kind, os.path.join(out, "alphas_%s.png" % kind), plt):
                written.append("alphas_%s.png" % kind)
        if plot_monitors(rows, os.path.join(out, "monitors.png"), plt):
            written.append("monitors.png")
    geno_path = os.path.join(args.run_dir, "genotype.json")
    if os.path.exists(geno_path):
        with open(geno_path) as f:
            g = json.load(f)
        for kind in ("normal", "reduce"):
            if not g.get(kind):
                continue  # a fixed reduction cell (reduce_cell) has no genes to draw
            if draw_cell(g[kind], g[kind + "_concat"], os.path.join(out, kind + ".png")):
                written.append(kind + ".png")
    print("plot_search: wrote %s into %s" % (", ".join(written), out))


if __name__ == "__main__":
    main()
