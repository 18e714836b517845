#!/usr/bin/python3
"""Every stored run in order, the trend of each headline ratio, and the runs
where a step change happened.

    bazel run //scripts:history [-- --dir results/runs --format json]

Headline ratios: for each family of our code declared in
scripts/references.py, the geometric mean over the family's benchmarks in
the run of (median time / median time of its primary reference), e.g.
BM_ProcessStartJoin/rss_mib:N over BM_ForkExitWait/rss_mib:N. A ratio is
measured against the raw mechanism in the same run, so it moves when our
code changes, not when the machine does. Lower is better.

Change-point rule (simple on purpose): in the series of one headline, run k
starts a step when
  - the W runs before it and the W runs from it on (W = --window, fewer at
    the ends but at least --min-side on each side) have medians that differ
    by at least --threshold percent, and
  - the two windows do not overlap (every value after is above every value
    before, or every value after is below),
and, among neighbouring runs that qualify, k is the one with the largest
change. The latest run alone (one value after) is reported as "unconfirmed"
when it lies outside the range of the W runs before it by more than the
threshold.

Lines never mix runs that cannot be compared: each series is drawn per
group of runs made on one machine (the machine_id of the fingerprint,
scripts/machine.py) in one mode (quick or full; a run built with an injected
slowdown is its own mode). A new host or a quick run starts its own line,
and the text says so.

`--benchmark REGEX` adds one line per matching benchmark (its median time,
and its ratio to its primary reference when the run has it), besides the
family headlines.

Runs are ordered by their start time (context.mpbench.started_utc, else
Google Benchmark's date, else the file name, which starts with the UTC time).
Unreadable files are listed and skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gbench
import references


@dataclass
class Step:
    index: int  # position in the list of runs
    before: float
    after: float
    change: float  # after/before - 1
    confirmed: bool = True


@dataclass
class Headline:
    """One line of the history: a family's headline ratio, or one
    benchmark's median time (`benchmark` set), over the runs of one group
    (machine and mode). `values` has one entry per run of the whole list,
    None for runs outside the group or without the series."""
    family: str
    label: str
    reference: str | None
    values: list[float | None] = field(default_factory=list)  # one per run
    counts: list[int] = field(default_factory=list)
    # the spread of each value (headline_spread), None where unknown
    lows: list[float | None] = field(default_factory=list)
    highs: list[float | None] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    machine_id: str = ""
    mode: str = ""
    benchmark: str | None = None
    unit: str = "ratio"

    @property
    def group(self) -> tuple[str, str]:
        return (self.machine_id, self.mode)


def run_order_key(path: Path, run: gbench.Run):
    when = run.mpbench.get("started_utc") or run.context.get("date") or ""
    return (str(when)[:19].replace("-", "").replace(":", "").replace("T", ""),
            path.name)


def list_runs(directory: Path) -> tuple[list[tuple[Path, gbench.Run]], list[str]]:
    """Readable runs in order, and a message for each unreadable file."""
    runs, problems = [], []
    for p in sorted(directory.glob("*.json")):
        if p.name.startswith("."):
            continue  # a run being written
        try:
            runs.append((p, gbench.load_run(p)))
        except gbench.InputError as e:
            problems.append(str(e))
    runs.sort(key=lambda pr: run_order_key(*pr))
    return runs, problems


def run_mode(run: gbench.Run) -> str:
    m = run.mpbench
    mode = "quick" if m.get("quick") else "full"
    if m.get("ab"):
        mode = "ab-" + mode
    if m.get("inject_slowdown"):
        mode += f"+inject({m['inject_slowdown']})"
    return mode


def run_group(run: gbench.Run) -> tuple[str, str]:
    """(machine id, mode): runs of one group may share a line."""
    return (run.machine_id(), run_mode(run))


def _headline_pairs(run: gbench.Run, prefix: str):
    """(family, benchmark, primary reference, their median times) for each
    benchmark of ours whose primary reference the run has."""
    for name in run.names():
        n = gbench.parse_name(name)
        if n.prefix != prefix:
            continue
        ref = references.primary_reference(name, run.has)
        if not ref or not run.has(ref):
            continue
        a, b = run.median(name), run.median(ref)
        if a and b:
            yield n.family, name, ref, a, b


def headline_values(run: gbench.Run, prefix: str = "BM_") -> dict[str, tuple[float, int]]:
    """{family: (geometric mean of bench/primary-reference median ratios,
    number of benchmarks)} for the families present in `run`."""
    ratios: dict[str, list[float]] = {}
    for family, _, _, a, b in _headline_pairs(run, prefix):
        ratios.setdefault(family, []).append(a / b)
    return {f: (gbench.geomean(v), len(v)) for f, v in ratios.items()}


def headline_spread(run: gbench.Run, prefix: str = "BM_") -> dict[str, tuple[float, float]]:
    """{family: (low, high)}: the range of a headline over the repetitions.
    For each benchmark, the smallest ratio any of its repetitions makes with
    any repetition of its reference (fastest of ours / slowest reference)
    and the largest (slowest / fastest); low and high are the geometric
    means of those over the family, as the headline is of the medians.
    A run with only aggregates gives each benchmark's median as both ends."""
    lows: dict[str, list[float]] = {}
    highs: dict[str, list[float]] = {}
    for family, name, ref, a, b in _headline_pairs(run, prefix):
        sa = [v for v in run.samples(name) if v > 0] or [a]
        sb = [v for v in run.samples(ref) if v > 0] or [b]
        lows.setdefault(family, []).append(min(sa) / max(sb))
        highs.setdefault(family, []).append(max(sa) / min(sb))
    return {f: (gbench.geomean(lows[f]), gbench.geomean(highs[f])) for f in lows}


def change_points(values: list[float | None], threshold: float = 5.0,
                  window: int = 3, min_side: int = 2) -> list[Step]:
    """Steps in a series by the rule in this module's docstring. None values
    (runs without the family) are skipped; indices refer to `values`."""
    idx = [i for i, v in enumerate(values) if v is not None and v > 0]
    xs = [values[i] for i in idx]
    found: list[Step] = []
    for k in range(1, len(xs)):
        before = xs[max(0, k - window):k]
        after = xs[k:k + window]
        if len(before) < min_side:
            continue
        mb = statistics.median(before)
        if len(after) < min_side:
            # the latest run alone: an unconfirmed step
            if k == len(xs) - 1:
                v = xs[k]
                change = v / mb - 1
                outside = v > max(before) or v < min(before)
                if outside and abs(change) * 100 >= threshold:
                    found.append(Step(idx[k], mb, v, change, confirmed=False))
            continue
        ma = statistics.median(after)
        change = ma / mb - 1
        separated = min(after) > max(before) or max(after) < min(before)
        if separated and abs(change) * 100 >= threshold:
            found.append(Step(idx[k], mb, ma, change))
    # among neighbouring candidates (consecutive positions), keep the largest
    out: list[Step] = []
    for s in found:
        if out and idx.index(s.index) - idx.index(out[-1].index) == 1 \
                and s.confirmed == out[-1].confirmed:
            if abs(s.change) > abs(out[-1].change):
                out[-1] = s
            continue
        out.append(s)
    return out


def analyse(runs: list[tuple[Path, gbench.Run]], threshold: float = 5.0,
            window: int = 3, min_side: int = 2,
            benchmark_regex: str | None = None) -> list[Headline]:
    """The lines of the history: for each group of runs (run_group), each
    family's headline ratio, then each benchmark matching
    `benchmark_regex`. Steps are found within a group only."""
    groups: list[tuple[str, str]] = []
    of_run = [run_group(r) for _, r in runs]
    for g in of_run:
        if g not in groups:
            groups.append(g)
    per_run = [headline_values(r) for _, r in runs]
    spread_of_run = [headline_spread(r) for _, r in runs]
    pattern = re.compile(benchmark_regex) if benchmark_regex else None
    heads = []
    for g in groups:
        members = {i for i, x in enumerate(of_run) if x == g}
        for rule in references.headline_families():
            if not any(rule.family in per_run[i] for i in members):
                continue
            h = Headline(rule.family, rule.label or rule.family, rule.refs[0].family,
                         machine_id=g[0], mode=g[1])
            for i, v in enumerate(per_run):
                val, n = v.get(rule.family, (None, 0)) if i in members else (None, 0)
                h.values.append(val)
                h.counts.append(n)
                lo, hi = (spread_of_run[i].get(rule.family, (None, None))
                          if val is not None else (None, None))
                h.lows.append(lo)
                h.highs.append(hi)
            h.steps = change_points(h.values, threshold, window, min_side)
            heads.append(h)
        if pattern is None:
            continue
        names = sorted({n for i in members for n in runs[i][1].names()
                        if pattern.search(n)}, key=gbench.natural_key)
        for name in names:
            h = Headline(gbench.parse_name(name).family, name,
                         references.primary_reference(name), machine_id=g[0],
                         mode=g[1], benchmark=name, unit="ns")
            for i, (_, r) in enumerate(runs):
                val = r.median(name) if i in members and r.has(name) else None
                h.values.append(val)
                h.counts.append(1 if val is not None else 0)
                reps = r.samples(name) if val is not None else []
                h.lows.append(min(reps) if reps else val)
                h.highs.append(max(reps) if reps else val)
            h.steps = change_points(h.values, threshold, window, min_side)
            heads.append(h)
    return heads


def run_row(path: Path, run: gbench.Run) -> dict:
    m = run.mpbench
    return {
        "file": path.name,
        "started": m.get("started_utc") or run.context.get("date"),
        "commit": (m.get("commit_short") or "?") + ("+dirty" if m.get("dirty") else ""),
        "host": m.get("host") or run.context.get("host_name"),
        "class": m.get("machine_class"),
        "quick": m.get("quick"),
        "inject": m.get("inject_slowdown"),
        "machine_id": run.machine_id(),
        "mode": run_mode(run),
        "benchmarks": len(run.names()),
    }


def _fmt(h: Headline, v: float | None) -> str:
    if v is None:
        return "-"
    return gbench.format_value(v, "time") if h.unit == "ns" else f"{v:.3f}"


def _group_title(runs, heads_of_group: list[Headline]) -> str:
    h = heads_of_group[0]
    idx = [i for i, v in enumerate(h.values) if v is not None]
    model = "?"
    for i in idx:
        m = runs[i][1].mpbench
        model = f"{m.get('cpu_model') or '?'}, {m.get('cores') or '?'} CPUs"
        break
    return f"machine {h.machine_id} ({model}), {h.mode} runs"


def format_text(runs, heads, problems) -> str:
    out = [f"{len(runs)} runs"]
    for p in problems:
        out.append(f"  skipped: {p}")
    if not runs:
        return "\n".join(out)
    header = ["#", "started (UTC)", "commit", "host", "machine", "mode"]
    rows = [header]
    for i, (p, r) in enumerate(runs, 1):
        rr = run_row(p, r)
        rows.append([str(i), str(rr["started"] or "?")[:19], rr["commit"],
                     str(rr["host"] or "?"), rr["machine_id"], rr["mode"]])
    widths = [max(len(row[j]) for row in rows) for j in range(len(header))]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    groups: list[tuple[str, str]] = []
    for h in heads:
        if h.group not in groups:
            groups.append(h.group)
    if len({g[0] for g in groups}) > 1 or len({g[1] for g in groups}) > 1:
        out.append("")
        out.append(f"NOTE: these runs come from {len({g[0] for g in groups})} "
                   f"machine(s) in {len({g[1] for g in groups})} mode(s): each "
                   f"(machine, mode) group below is its own series; numbers of "
                   f"two groups are not comparable")
    for g in groups:
        gh = [h for h in heads if h.group == g]
        out.append("")
        out.append(_group_title(runs, gh) + ":")
        for h in gh:
            vals = [(i, v) for i, v in enumerate(h.values) if v is not None]
            what = (f"{h.benchmark} (median time)" if h.benchmark else
                    f"{h.family} / {h.reference}  [{h.label}]")
            series = ", ".join(f"#{i + 1} {_fmt(h, v)}" for i, v in vals[-8:])
            trend = ""
            if len(vals) >= 2:
                trend = (f"; first->last {_fmt(h, vals[0][1])} -> {_fmt(h, vals[-1][1])}"
                         f" ({(vals[-1][1] / vals[0][1] - 1) * 100:+.1f}%)")
            out.append(f"  {what}: {len(vals)} runs{trend}")
            out.append(f"    {series}")
            for s_ in h.steps:
                p, r = runs[s_.index]
                rr = run_row(p, r)
                kind = "step" if s_.confirmed else "unconfirmed step (latest run only)"
                out.append(f"    {kind} at run {s_.index + 1} ({rr['commit']}, "
                           f"{str(rr['started'])[:19]}): {_fmt(h, s_.before)} -> "
                           f"{_fmt(h, s_.after)} ({s_.change * 100:+.1f}%)")
    if not heads:
        out.append("  (no run has a benchmark of our code next to its reference)")
    return "\n".join(out)


def format_json(runs, heads, problems) -> str:
    return json.dumps({
        "runs": [run_row(p, r) for p, r in runs],
        "skipped": problems,
        "headlines": [{
            "family": h.family, "reference": h.reference, "label": h.label,
            "benchmark": h.benchmark, "unit": h.unit,
            "machine_id": h.machine_id, "mode": h.mode,
            "values": h.values, "counts": h.counts, "lows": h.lows, "highs": h.highs,
            "steps": [{"run": s.index + 1, "file": runs[s.index][0].name,
                       "before": s.before, "after": s.after, "change": s.change,
                       "confirmed": s.confirmed} for s in h.steps],
        } for h in heads],
    }, indent=2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="history", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=None,
                   help="directory of run files (default: results/runs of the "
                   "source tree)")
    p.add_argument("--threshold", type=float, default=5.0, metavar="PCT",
                   help="smallest step, in percent of the ratio (default 5)")
    p.add_argument("--window", type=int, default=3, metavar="W",
                   help="runs on each side of a candidate step (default 3)")
    p.add_argument("--min-side", type=int, default=2, metavar="N",
                   help="fewest runs on each side for a confirmed step (default 2)")
    p.add_argument("--benchmark", metavar="REGEX",
                   help="also draw one line per benchmark whose name matches "
                   "REGEX (searched anywhere in the name), its median time")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text table (default) or json for tools")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    d = gbench.user_path(args.dir) if args.dir else gbench.repo_root() / "results" / "runs"
    if not d.is_dir():
        print(f"history: error: {d} is not a directory", file=sys.stderr)
        return 2
    if args.window < 1 or args.min_side < 1:
        print("history: error: --window and --min-side must be at least 1",
              file=sys.stderr)
        return 2
    runs, problems = list_runs(d)
    try:
        heads = analyse(runs, args.threshold, args.window, args.min_side,
                        args.benchmark)
    except re.error as e:
        print(f"history: error: --benchmark: {e}", file=sys.stderr)
        return 2
    print(format_json(runs, heads, problems) if args.format == "json"
          else format_text(runs, heads, problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
