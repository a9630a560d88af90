#!/usr/bin/env python3
"""Per-kernel table of an Nsight Compute run (perf/ncu_kernels.sh).

Reads the raw CSV pages of ncu reports (`ncu --import R --csv --page raw --print-units base`),
groups the profiled launches by kernel (name without namespaces and parameters, template
arguments kept), grid and block, and prints the groups by total time: launches, total and mean
microseconds, registers per thread (the most of the group's launches) and, where the report has them, achieved occupancy, DRAM
throughput and the top warp stall (means over the launches that report them). Then the same per kernel name. Columns the report lacks are
left blank, so one parser serves the one-pass timing run and the run with sections.

Usage: ncu_table.py RAW.csv [RAW2.csv ...] [--top N]
"""
import argparse
import csv
import re
import sys
from collections import OrderedDict

TIME = "gpu__time_duration.sum"
REGS = "launch__registers_per_thread"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
STALL_PREFIX = "smsp__average_warps_issue_stalled_"
STALL_SUFFIX = "_per_issue_active.ratio"


def short_name(name):
    """'void ns::(anonymous namespace)::k<float, 4>(const float *, ...)' -> 'k<float, 4>'."""
    name = name.strip().replace("(anonymous namespace)::", "")
    if name.startswith("void "):
        name = name[5:]
    depth, cut, last_qualifier = 0, len(name), 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and ch == "(":
            cut = i  # the parameter list
            break
        elif depth == 0 and name.startswith("::", i):
            last_qualifier = i + 2
    return name[last_qualifier:cut]


def number(text):
    text = (text or "").replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


class TableError(Exception):
    pass


def read_rows(path):
    try:
        with open(path, newline="") as f:
            lines = [l for l in f if l.startswith('"')]  # ncu's own messages are not quoted
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror}")
    reader = csv.DictReader(lines)
    if lines and not {"ID", "Kernel Name", TIME} <= set(reader.fieldnames or []):
        raise TableError(f"{path} is not an ncu raw page with {TIME}: its header has "
                         f"{', '.join(reader.fieldnames or [])[:200]}; expected the columns "
                         f"ID, Kernel Name and {TIME} (ncu --csv --page raw)")
    rows = []
    for row in reader:
        if not (row.get("ID") or "").strip().isdigit():
            continue  # the units row
        rows.append(row)
    return rows


def stall_columns(fieldnames):
    return [c for c in fieldnames if c.startswith(STALL_PREFIX) and c.endswith(STALL_SUFFIX)]


def summarise(rows, key):
    groups = OrderedDict()
    stalls = stall_columns(rows[0].keys()) if rows else []
    for row in rows:
        k = key(row)
        g = groups.setdefault(k, {"n": 0, "ns": 0.0, "regs": None, "occ": [], "dram": [],
                                  "stall": {}})
        g["n"] += 1
        g["ns"] += number(row.get(TIME)) or 0.0
        if number(row.get(REGS)) is not None:  # the most of the group's launches
            g["regs"] = max(g["regs"] or 0, int(number(row.get(REGS))))
        for col, field in ((OCCUPANCY, "occ"), (DRAM, "dram")):
            v = number(row.get(col))
            if v is not None:
                g[field].append(v)
        for col in stalls:
            v = number(row.get(col))
            if v is not None:
                reason = col[len(STALL_PREFIX):-len(STALL_SUFFIX)]
                g["stall"].setdefault(reason, []).append(v)
    return sorted(groups.items(), key=lambda kv: -kv[1]["ns"])


def mean(values):
    return sum(values) / len(values) if values else None


def fmt(v, spec):
    return format(v, spec) if v is not None else ""


def print_table(title, groups, top, total_ns, with_shape):
    print(title)
    head = f"{'kernel':<58} {'grid':>14} {'block':>12}" if with_shape else f"{'kernel':<58}"
    print(f"{head} {'launches':>8} {'total us':>10} {'mean us':>9} {'%':>6} {'regs':>5} "
          f"{'occ %':>6} {'dram %':>7}  top stall")
    for k, g in groups[:top]:
        name = k[0] if with_shape else k
        line = f"{name[:58]:<58}"
        if with_shape:
            line += f" {k[1]:>14} {k[2]:>12}"
        stall = ""
        if g["stall"]:
            reason, v = max(((r, mean(vs)) for r, vs in g["stall"].items()), key=lambda kv: kv[1])
            stall = f"{reason} {v:.1f}"
        share = 100.0 * g["ns"] / total_ns if total_ns else 0.0
        line += (f" {g['n']:>8} {g['ns'] / 1000:>10.1f} {g['ns'] / 1000 / g['n']:>9.2f} "
                 f"{share:>6.1f} {fmt(g['regs'], 'd'):>5} {fmt(mean(g['occ']), '.1f'):>6} "
                 f"{fmt(mean(g['dram']), '.1f'):>7}  {stall}")
        print(line)
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    try:
        rows = [row for path in args.csv for row in read_rows(path)]
    except TableError as e:
        print(f"ncu_table: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"ncu_table: no profiled kernels in {' '.join(args.csv)}")
        return 1
    total_ns = sum(number(r.get(TIME)) or 0.0 for r in rows)
    print(f"{len(rows)} kernel launches profiled, {total_ns / 1e6:.3f} ms of kernel time\n")
    shape = summarise(rows, lambda r: (short_name(r["Kernel Name"]), r.get("Grid Size", "").replace(" ", ""),
                                       r.get("Block Size", "").replace(" ", "")))
    print_table("by kernel, grid and block", shape, args.top, total_ns, True)
    by_name = summarise(rows, lambda r: re.sub(r"<.*", "", short_name(r["Kernel Name"])))
    print_table("by kernel name", by_name, args.top, total_ns, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
