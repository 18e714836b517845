#!/usr/bin/python3
"""A run in the formats of the dashboards users already run.

    bazel run //scripts:export -- RUN.json --format github-action-benchmark [--out FILE]
    bazel run //scripts:export -- RUN.json --format bencher [--out FILE]

github-action-benchmark: the `customSmallerIsBetter` tool's input, a JSON
list of {"name", "unit", "value", "range", "extra"}: one entry per
benchmark for its median real time (unit "ns"), and one per counter that
is a time (p50_ns, p99_ns: "<name> [p50_ns]"). Rates (bytes_per_second,
items_per_second) are larger-is-better and have no place in that file.
"range" is "± half the min–max spread" of the repetitions, "extra" the
number of repetitions and the run's commit and machine.

bencher: Bencher Metric Format, {benchmark name: {measure: {"value",
"lower_value", "upper_value"}}}: measure "latency" (median real time in
ns, min and max of the repetitions), "throughput" (items_per_second) and
every other counter under its own name in kebab case (bytes-per-second,
p50-ns, ...).

Names are the base names (without /real_time); failed benchmarks are left
out and listed on stderr. Writes to stdout unless --out. Exit 2 when the run
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

import gbench


def _stats(run, name, metric):
    s = run.samples(name, metric)
    med = run.median(name, metric)
    if med is None:
        return None
    return med, (min(s) if s else med), (max(s) if s else med), len(s)


def _extra(run, n):
    m = run.mpbench
    bits = [f"{n} repetitions" if n else "aggregates only"]
    if m.get("commit_short"):
        bits.append(f"commit {m['commit_short']}")
    if m.get("cpu_model"):
        bits.append(f"{m['cpu_model']}, {m.get('cores', '?')} cores")
    if m.get("quick"):
        bits.append("quick run")
    return "; ".join(bits)


def github_action_benchmark(run) -> list[dict]:
    out = []
    for name in run.names():
        b = run.get(name)
        if b.error:
            continue
        metrics = ["time"] + [c for c in b.counters()
                              if c != "cpu_time" and gbench.higher_is_better(c) is False]
        for metric in metrics:
            st = _stats(run, name, metric)
            if st is None:
                continue
            med, lo, hi, n = st
            out.append({
                "name": name if metric == "time" else f"{name} [{metric}]",
                "unit": "ns",
                "value": med,
                "range": f"± {(hi - lo) / 2:.4g}",
                "extra": _extra(run, n),
            })
    return out


def _slug(counter: str) -> str:
    return {"items_per_second": "throughput"}.get(counter, counter.replace("_", "-"))


def bencher(run) -> dict:
    out: dict = {}
    for name in run.names():
        b = run.get(name)
        if b.error:
            continue
        measures = {}
        for metric in ["time"] + [c for c in b.counters() if c != "cpu_time"]:
            st = _stats(run, name, metric)
            if st is None:
                continue
            med, lo, hi, _ = st
            measures["latency" if metric == "time" else _slug(metric)] = {
                "value": med, "lower_value": lo, "upper_value": hi}
        if measures:
            out[name] = measures
    return out


FORMATS = {"github-action-benchmark": github_action_benchmark, "bencher": bencher}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="export", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run file (Google Benchmark JSON)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS),
                   help="github-action-benchmark (customSmallerIsBetter) or "
                   "bencher (Bencher Metric Format)")
    p.add_argument("--out", help="write here instead of stdout")
    args = p.parse_args(argv)
    try:
        run = gbench.load_run(gbench.user_path(args.run))
    except gbench.InputError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    for name in run.names():
        if run.error(name):
            print(f"export: left out {name}: {run.error(name)}", file=sys.stderr)
    text = json.dumps(FORMATS[args.format](run), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        with open(gbench.user_path(args.out), "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
