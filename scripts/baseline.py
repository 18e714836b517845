#!/usr/bin/python3
"""Makes a baseline: the reference a regression gate compares with.

    bazel run //scripts:baseline -- RUN.json [RUN2.json ...] [--name NAME]

Writes results/baselines/<NAME>.json, where NAME defaults to the runs'
machine class (`<arch>-<N>cpu`, e.g. x86_64-2cpu; see scripts/machine.py).
CI compares its quick run with results/baselines/<machine class of the CI
machine>.json, so make the baseline from quick runs on that class of machine.

From several runs (recommended: three quick runs), the baseline pools their
repetitions and tags each with the run it came from ("mpbench_source").
`compare` then knows how much each benchmark moves from one run to the next
on this machine, and alarms only beyond that (see compare --noise-factor):
a benchmark whose medians differ by 40% between three quiet runs cannot gate
a 10% change, and says so instead of failing CI at random.

    for i in 1 2 3; do scripts/bench --quick --no-python --no-plot; done
    bazel run //scripts:baseline -- results/runs/<the three runs>.json

Every run must have each benchmark repeated enough for the U test to reach
p < 0.05 (4 or more repetitions), none may have failed benchmarks, and all
must be of one machine class. An existing baseline of that name is replaced
(its commit is printed; git shows the difference). Where it came from is
recorded in context["mpbench"]["baseline"]; the file is written atomically.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import re
import sys

import compare
import gbench
import suite


def pool_sources(datas: list[dict]) -> dict:
    """One run file from several runs of the same suite: every repetition
    kept and tagged with "mpbench_source" (its run's index), repetition
    indices renumbered; aggregates dropped (they were per run)."""
    merged = {"context": copy.deepcopy(datas[0].get("context") or {}), "benchmarks": []}
    count: dict[str, int] = {}
    for src, data in enumerate(datas):
        for e in data.get("benchmarks", []):
            if e.get("run_type") == "aggregate":
                continue
            e = dict(e)
            key = e.get("run_name") or e.get("name")
            e["repetition_index"] = count.get(key, 0)
            e["mpbench_source"] = src
            count[key] = count.get(key, 0) + 1
            merged["benchmarks"].append(e)
    for e in merged["benchmarks"]:
        e["repetitions"] = count[e.get("run_name") or e.get("name")]
    return merged


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baseline", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run file(s) to make the baseline from, e.g. "
                   "results/runs/X.json; several are pooled")
    p.add_argument("--name", help="baseline name (default: the runs' machine "
                   "class, e.g. x86_64-2cpu)")
    p.add_argument("--allow-few-repetitions", action="store_true",
                   help="accept runs whose benchmarks have too few repetitions "
                   "for the U test (the gate would then always report status 2)")
    return p


def fail(msg: str) -> int:
    print(f"baseline: error: {msg}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    srcs = [gbench.user_path(r) for r in args.runs]
    runs = []
    for src in srcs:
        try:
            runs.append(gbench.load_run(src))
        except gbench.InputError as e:
            return fail(str(e))
    classes = {r.mpbench.get("machine_class") for r in runs}
    if len(classes) > 1:
        return fail(f"the runs are of different machine classes: {sorted(map(str, classes))}")
    name = args.name or next(iter(classes))
    if not name:
        return fail("the run has no machine class (not written by the suite "
                    "runner); give --name")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        return fail(f"bad name {name!r} (letters, digits, . _ + - only)")
    need = compare._needed_repetitions(compare.DEFAULT_ALPHA)
    for src, run in zip(srcs, runs):
        failed = [b.name for b in run.benchmarks.values() if b.error]
        if failed:
            return fail(f"{src.name}: {len(failed)} benchmarks failed (e.g. "
                        f"{failed[0]}); a baseline must be complete")
        few = [n for n in run.names() if len(run.samples(n)) < need]
        if few and not args.allow_few_repetitions:
            return fail(f"{src.name}: {len(few)} benchmarks have fewer than {need} "
                        f"repetitions (e.g. {few[0]}: {len(run.samples(few[0]))}); "
                        f"the gate could never fail against them")
        if run.fingerprint() != runs[0].fingerprint():
            print(f"baseline: warning: {src.name} has another machine fingerprint "
                  f"than {srcs[0].name}", file=sys.stderr)
    dest = gbench.repo_root() / "results" / "baselines" / f"{name}.json"
    if dest.exists():
        try:
            old = gbench.load_run(dest)
            print(f"baseline: replacing {dest.name} (was {old.label()})", file=sys.stderr)
        except gbench.InputError:
            print(f"baseline: replacing unreadable {dest.name}", file=sys.stderr)
    datas = [json.loads(s.read_text(encoding="utf-8")) for s in srcs]
    data = pool_sources(datas) if len(datas) > 1 else datas[0]
    data.setdefault("context", {}).setdefault("mpbench", {})["baseline"] = {
        "name": name,
        "sources": [{"file": s.name, "commit": r.mpbench.get("commit"),
                     "dirty": r.mpbench.get("dirty"),
                     "started_utc": r.mpbench.get("started_utc")}
                    for s, r in zip(srcs, runs)],
        "made_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        .isoformat().replace("+00:00", "Z"),
    }
    suite.write_atomic(dest, data)
    print(f"baseline: wrote {dest} from {len(srcs)} run(s) ({runs[0].label()}, "
          f"{len(runs[0].names())} benchmarks)", file=sys.stderr)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
