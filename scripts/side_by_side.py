#!/usr/bin/python3
"""CPython's multiprocessing side by side with our C++ primitives.

    bazel run //scripts:side_by_side -- RUN.json            # BM_* and Py* in one file
    bazel run //scripts:side_by_side -- CPP.json [...] PY.json
    bazel run //scripts:side_by_side                        # newest runs in results/runs

Prints one row per experiment: its name without the prefix, the Python
reference's time (scripts/python_reference.py), the C++ time, how many times
faster the C++ side is, and how much of CPython's time the C++ side does not need.

Pairing. `PyX/args` pairs with `BM_X/args` (the `/real_time`-style suffixes
dropped, as scripts/gbench.py does). An argument the C++ name has and no
Python name of that family has (the queues' `spin_us:S`: CPython's Queue
never spins) is ignored for pairing, so one Python row can match several C++
variants. By default the row shows the fastest variant (lowest median time)
and names it; --each prints one row per variant. C++ benchmarks of families
the Python reference does not run (vfork, posix_spawn, Boost, ...) are left
out; C++ benchmarks of a shared family with no Python counterpart (for
example `rss_mib:2048`) get a row with "—" for Python, and so do Python rows
whose C++ side is missing.

Numbers. Each side is the median over its repetitions of real time per
iteration (one message, one round trip, one process, one map of N items).
"C++ ×" is how many times faster the C++ side is: the ratio of
items_per_second where both sides report it (round-trip families excepted),
else Python's median time over the C++ median time; a `*` marks a row where
the two ratios disagree by more than 5% (an iteration is not the same work
on both sides). "Py overhead" is the share of CPython's time that the C++
side does not need: 1 − t(BM_RawX) / t(PyX) when the run has the C++ raw
mechanism (`BM_RawPipeThroughput` for `PipeThroughput`, `BM_ForkExitWait`
for `ProcessStartJoin`), else 1 − t(BM_X) / t(PyX). For the pipes, where
both sides make the same system calls per message, it is the interpreter's
share of CPython's time.

Exit status: 0; 2 when a file cannot be read or holds no Py benchmark.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys

import gbench

DASH = "\u2014"
# Families whose time is a round trip: compared by time, never by rate.
LATENCY_FAMILY = re.compile(r"PingPong$")
# The C++ raw mechanism that bounds a family: share of CPython's time above
# it is the interpreter's (plus multiprocessing's framing).
RAW_FAMILY = {
    "PipeThroughput": "RawPipeThroughput",
    "PipePingPong": "RawPipePingPong",
    "RawPipeThroughput": "RawPipeThroughput",
    "RawPipePingPong": "RawPipePingPong",
    "ProcessStartJoin": "ForkExitWait",
    "ForkExitWait": "ForkExitWait",
}


class Side:
    """One benchmark of one side: where it came from and its medians."""

    def __init__(self, run: gbench.Run, name: str):
        self.run = run
        self.name = name
        self.bench = run.get(name)
        self.error = run.error(name)
        self.time = run.median(name)  # ns
        self.items = run.median(name, "items_per_second")
        self.bytes = run.median(name, "bytes_per_second")
        self.reps = len(run.samples(name))


class Row:
    def __init__(self, experiment, py, cpp, variant=None, raw=None):
        self.experiment = experiment
        self.py = py
        self.cpp = cpp
        self.variant = variant  # the C++ arguments that Python lacks
        self.raw = raw  # the C++ raw mechanism's Side, if any

    @property
    def family(self):
        return gbench.parse_name("Py" + self.experiment).family

    def ratio(self):
        """(how many times faster C++ is, basis) or (None, None). The basis
        is "time", or "items" when the rates were used and the time ratio
        differs from them by more than 5% (an iteration is not the same
        work on both sides)."""
        py, cpp = self.py, self.cpp
        if not py or not cpp or py.error or cpp.error:
            return None, None
        by_time = py.time / cpp.time if py.time and cpp.time else None
        if (not LATENCY_FAMILY.search(self.family) and py.items and cpp.items):
            by_items = cpp.items / py.items
            if by_time is None or abs(by_items / by_time - 1) > 0.05:
                return by_items, "items"
            return by_items, "time"
        return (by_time, "time") if by_time else (None, None)

    def overhead(self):
        ref = self.raw or self.cpp
        if not self.py or not ref or self.py.error or ref.error:
            return None
        if not self.py.time or not ref.time:
            return None
        share = 1.0 - ref.time / self.py.time
        return share if share >= 0 else None


def _load(paths):
    runs = []
    for p in paths:
        runs.append(gbench.load_run(gbench.user_path(p)))
    return runs


def _index(runs, prefix):
    """base name -> (Run, Name) for every benchmark with `prefix`; later
    files win on collisions."""
    out = {}
    for run in runs:
        for name in run.names():
            n = gbench.parse_name(name)
            if n.prefix == prefix:
                out[name] = (run, n)
    return out


def pair(runs, each=False):
    py = _index(runs, "Py")
    cpp = _index(runs, "BM_")
    if not py:
        raise gbench.InputError("no Py* benchmark in "
                                + ", ".join(r.path for r in runs)
                                + " (run scripts/python_reference.py)")
    py_keys = {}  # family -> argument keys any Python name uses
    for _, n in py.values():
        py_keys.setdefault(n.family, set()).update(k for k, _ in n.args)
    py_families = set(py_keys)

    def shared_args(n):
        keys = py_keys.get(n.family, set())
        kept = tuple((k, v) for k, v in n.args if k in keys)
        extra = tuple((k, v) for k, v in n.args if k not in keys)
        return kept, extra

    by_key = {}  # (family, args) -> [(extra args, cpp name)]
    for name, (_, n) in cpp.items():
        if n.family not in py_families:
            continue
        kept, extra = shared_args(n)
        by_key.setdefault((n.family, kept), []).append((extra, name))

    def raw_side(n):
        fam = RAW_FAMILY.get(n.family)
        if not fam:
            return None
        raw = gbench.Name("BM_", fam, n.args).full
        if fam == "ForkExitWait":
            raw = gbench.Name("BM_", fam,
                              tuple(a for a in n.args if a[0] == "rss_mib")).full
        for name, (run, _) in cpp.items():
            if name == raw:
                return Side(run, name)
        return None

    rows = []
    used = set()
    for name, (run, n) in py.items():
        key = (n.family, n.args)
        experiment = gbench.Name("", n.family, n.args).full
        py_side = Side(run, name)
        matches = by_key.get(key, [])
        used.add(key)
        if not matches:
            rows.append(Row(experiment, py_side, None, raw=raw_side(n)))
            continue
        sides = [(extra, Side(cpp[c][0], c)) for extra, c in matches]
        if each:
            for extra, side in sides:
                rows.append(Row(experiment, py_side, side, _variant(extra),
                                raw_side(gbench.parse_name(side.name))))
        else:
            extra, best = min(sides, key=lambda s: (
                s[1].time is None or bool(s[1].error), s[1].time or 0))
            rows.append(Row(experiment, py_side, best,
                            _variant(extra) if len(sides) > 1 or extra
                            else None,
                            raw_side(gbench.parse_name(best.name))))
    # C++ benchmarks of shared families without a Python counterpart.
    for key, matches in by_key.items():
        if key in used:
            continue
        for extra, c in matches:
            n = cpp[c][1]
            experiment = gbench.Name("", n.family, key[1]).full
            rows.append(Row(experiment, None, Side(cpp[c][0], c),
                            _variant(extra) or None))
            if not each:
                break
    rows.sort(key=lambda r: (_family_rank(r.family), _natural(r.experiment),
                             _natural(r.variant or "")))
    return rows


# The order: process cost, pipes, queues, FloatChannel, pools.
FAMILY_ORDER = (
    "ForkExitWait", "ProcessStartJoin",
    "PipeThroughput", "RawPipeThroughput", "PipePingPong", "RawPipePingPong",
    "QueueThroughput", "JoinableQueueThroughput", "QueuePingPong",
    "FloatChannel",
    "PoolCreate", "PoolTeardown", "SerialMap", "PoolMap", "PoolImapUnordered",
)


def _family_rank(family):
    try:
        return (FAMILY_ORDER.index(family), "")
    except ValueError:
        return (len(FAMILY_ORDER), family)


def _natural(text):
    """Numbers compare as numbers: bytes:8 < bytes:64 < bytes:4096."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t)
            for t in re.split(r"(\d+)", text) if t]


def _variant(extra):
    return "/".join(f"{k}:{v}" if k else v for k, v in extra) or None


def _cell_time(side):
    if side is None:
        return DASH
    if side.error:
        return "error"
    if side.time is None:
        return DASH
    return gbench.format_value(side.time, "time")


def _cell_rate(side):
    if side is None or side.error:
        return DASH
    if side.bytes:
        return gbench.format_value(side.bytes, "bytes_per_second")
    if side.items:
        return gbench.format_value(side.items, "items_per_second")
    return DASH


def table(rows, rates=False, each=False):
    header = ["experiment", "Python", "C++", "C++ \u00d7", "Py overhead"]
    if rates:
        header[3:3] = ["Python rate", "C++ rate"]
    body = []
    for r in rows:
        ratio, basis = r.ratio()
        nk = r.overhead()
        exp = r.experiment
        if r.variant and r.cpp:
            exp += f" [C++ {r.variant}]"
        line = [exp, _cell_time(r.py), _cell_time(r.cpp)]
        if rates:
            line += [_cell_rate(r.py), _cell_rate(r.cpp)]
        line += [DASH if ratio is None else
                 f"{ratio:.3g}" + ("" if basis == "time" else "*"),
                 DASH if nk is None else f"{100 * nk:.0f}%"]
        body.append(line)
    return header, body


def render(header, body, fmt):
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join("---" if i == 0 else "---:"
                              for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |"
                for line in body]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in body)) if body
              else len(h) for i, h in enumerate(header)]
    fmt_line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
        for i, c in enumerate(cells))
    out = [fmt_line(header), fmt_line(["-" * w for w in widths])]
    out += [fmt_line(line) for line in body]
    return "\n".join(out)


FOOTNOTE = (
    "Times: median real time per iteration over the repetitions. C++ \u00d7: "
    "how many times faster C++ is (from items_per_second where both sides "
    "report it, else from time; * = the two disagree, an iteration is not "
    "the same work on both sides). Py overhead: 1 \u2212 t(C++ raw "
    "mechanism, else C++) / t(Python), the share of CPython's time the C++ "
    "side does not need; for the pipes, measured against the C++ raw pipe "
    "(same system calls per message), it is the interpreter's share. "
    "[C++ spin_us:S]: the fastest of the C++ variants CPython has no "
    "counterpart for (--each shows all). \u2014: not measured on that side.")


def newest_runs(root):
    """The newest run file holding Py benchmarks, plus, when it has no BM_
    benchmarks of the paired families, the newest file holding each one."""
    files = sorted(glob.glob(os.path.join(root, "results", "runs", "*.json")),
                   key=os.path.getmtime, reverse=True)
    loaded = []
    for f in files:
        try:
            loaded.append(gbench.load_run(f))
        except gbench.InputError:
            continue
    py = next((r for r in loaded
               if any(n.startswith("Py") for n in r.names())), None)
    if py is None:
        raise gbench.InputError(f"no run file with Py* benchmarks in "
                                f"{root}/results/runs (run bazel run "
                                f"//scripts:python_reference)")
    families = {gbench.parse_name(n).family for n in py.names()
                if n.startswith("Py")}
    chosen = [py]
    have = {gbench.parse_name(n).family for n in py.names()
            if n.startswith("BM_")}
    for r in loaded:
        fams = {gbench.parse_name(n).family for n in r.names()
                if n.startswith("BM_")} & families
        if fams - have:
            chosen.insert(0, r)
            have |= fams
    return chosen


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="*",
                   help="run files (Google Benchmark JSON): one holding both "
                        "BM_* and Py* benchmarks, or C++ run(s) and a Python "
                        "run; none: the newest in results/runs")
    p.add_argument("--each", action="store_true",
                   help="one row per C++ variant (spin_us) instead of the "
                        "fastest")
    p.add_argument("--rates", action="store_true",
                   help="also show each side's bytes_per_second (or "
                        "items_per_second)")
    p.add_argument("--filter", default="",
                   help="only experiments matching this regular expression")
    p.add_argument("--format", choices=("text", "markdown"), default="text")
    opts = p.parse_args(argv)
    try:
        runs = (_load(opts.runs) if opts.runs
                else newest_runs(str(gbench.repo_root())))
        rows = pair(runs, each=opts.each)
    except gbench.InputError as e:
        print(f"side_by_side: {e}", file=sys.stderr)
        return 2
    rows = [r for r in rows if re.search(opts.filter, r.experiment)]
    header, body = table(rows, rates=opts.rates, each=opts.each)
    print("files: " + ", ".join(os.path.basename(r.path) for r in runs))
    print(render(header, body, opts.format))
    print()
    print(FOOTNOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
