#!/usr/bin/python3
"""The regression gate: this change against its parent, on this machine, in
the same minutes.

    scripts/gate [--base REV] [--families ipc,pool,fork] [--filter REGEX]
                 [--inject PRIMITIVE=FACTOR] [--format text|markdown]

1. Exports the parent commit (--base, default HEAD~1) into a work directory
   kept between runs (~/.cache/mpbench/gate-base: its Bazel output base and
   the shared disk cache make the second build of a revision nearly free)
   and builds its benchmark families; builds the working tree's.
2. Runs the gated benchmarks of both, interleaved: A B, B A, A B, ...
   (--rounds of each), so that drift of a shared machine and the cost of
   running second hit both sides alike.
3. Compares the two with the statistics of scripts/compare.py in direct
   mode (both sides share machine and minutes, so no reference or baseline
   is needed): per row and per family (all instances pooled), the change of
   medians beyond --threshold and a Mann-Whitney U test on the interleaved
   repetitions, Holm-corrected over every gated row. Only our own code is
   gated (scripts/references.py: raw system calls, memcpy and Boost are
   reported, not gated).
4. On an alarm it measures both sides again (another interleaved set of
   rounds) and fails only on the rows that regressed both times: a change
   of our code shows in every measurement, a neighbour's burst of load
   rarely hits the same rows twice.

No committed file is read: a fresh clone on any host passes or fails on
its code alone. results/baselines/ is history and report material, never
the reference here. With no parent commit the gate says so and passes.

`--inject pipe=1.05` builds the working tree with a deliberate 5% slowdown
of one primitive (lib/slowdown.h; a test build through Bazel defines, the
library users link has no such hook) to show that the gate catches it.

Exit status: 0 no regression; 1 a regression (named); 2 unusable input (an
unknown revision, a build failure, nothing comparable).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import ab
import compare
import gbench
import suite

# What the gate runs of each family, at --min-time 0.01 s a repetition: every
# primitive of ours at a small, a page-sized and a large message, the pool's
# quick subset, and process start by each start method at two parent sizes. The largest sizes
# (1 and 16 MiB, 512 and 2048 MiB parents) measure memory bandwidth and page
# tables rather than our code and take most of a full run's time.
GATE_FILTERS = {
    # (Google Benchmark's filters are POSIX extended regular expressions.)
    "fork": (r"^BM_(ForkExitWait|ProcessStartJoin(/start:[a-z]+)?)"
             r"(/rss_mib:(0|64))?/real_time$"),
    "ipc": (r"^BM_[A-Za-z]*(Pipe|Queue|Channel|Ring)[A-Za-z]*(Throughput|PingPong)"
            r"/bytes:(64|4096|65536)/|^BM_FloatChannel/"),
    "pool": suite.FAMILY_SETTINGS["pool"]["quick"]["filter"],
}
DEFAULT_ROUNDS = 4
DEFAULT_REPETITIONS = 3
DEFAULT_MIN_TIME = 0.01
# A 5% slowdown of one primitive must be caught; a machine's noise must not
# be. 3% is below the smallest slowdown the gate promises to catch and above
# the spread of interleaved medians of one build (scripts/README.md, "The
# gate", for the measurements).
DEFAULT_THRESHOLD = 3.0


def log(msg: str) -> None:
    print(f"gate: {msg}", file=sys.stderr, flush=True)


def parent_of(root: Path, rev: str) -> str | None:
    """The commit `rev` names, None when it does not exist (HEAD~1 of the
    first commit)."""
    r = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       cwd=root, capture_output=True, text=True, check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


def is_shallow(root: Path) -> bool:
    r = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=root,
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() == "true"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gate", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="HEAD~1", metavar="REV",
                   help="the revision to compare with (anything git rev-parse "
                   "understands; default HEAD~1, the parent of the last commit; "
                   "HEAD compares the last commit with the working tree, which "
                   "is an A/A test when nothing is changed)")
    p.add_argument("--families", metavar="LIST", default=",".join(suite.FAMILIES),
                   help=f"comma-separated families to gate (default "
                   f"{','.join(suite.FAMILIES)})")
    p.add_argument("--filter", metavar="REGEX",
                   help="--benchmark_filter for every family instead of the "
                   "gate's own subset (GATE_FILTERS in scripts/gate.py)")
    p.add_argument("--inject", metavar="PRIMITIVE=FACTOR",
                   help="build the working tree with a deliberate slowdown of "
                   f"one primitive ({', '.join(suite.INJECT_PRIMITIVES)}) by "
                   "FACTOR, e.g. pipe=1.05, to check that the gate catches it")
    p.add_argument("--format", choices=("text", "markdown"), default="text",
                   help="report format; markdown is a pull-request comment of "
                   f"at most {compare.MARKDOWN_LIMIT} characters")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"runs of each side, interleaved A B, B A, ... "
                   f"(default {DEFAULT_ROUNDS})")
    p.add_argument("--repetitions", type=int, default=DEFAULT_REPETITIONS,
                   help=f"repetitions per run (default {DEFAULT_REPETITIONS}; "
                   f"the U test sees rounds x repetitions samples a side)")
    p.add_argument("--min-time", type=float, default=DEFAULT_MIN_TIME,
                   metavar="SECONDS", help="--benchmark_min_time per repetition "
                   f"(default {DEFAULT_MIN_TIME:g})")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   metavar="PCT", help="smallest change of the median, in "
                   f"percent, that can count (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--alpha", type=float, default=compare.DEFAULT_ALPHA,
                   help=f"U-test significance after Holm's correction "
                   f"(default {compare.DEFAULT_ALPHA:g})")
    p.add_argument("--no-confirm", action="store_true",
                   help="fail on the first measurement's alarms without "
                   "measuring again")
    p.add_argument("--changes-only", action="store_true",
                   help="list only significant changes in the report")
    p.add_argument("--out-dir", metavar="DIR",
                   help="where the pooled run files and the report go (default "
                   "results/gate of the source tree; not committed)")
    p.add_argument("--work-dir", metavar="DIR",
                   help="where the base revision is exported and built (default "
                   "~/.cache/mpbench/gate-base; reused between runs)")
    p.add_argument("--bazel", metavar="CMD",
                   help="how to call Bazel (default $MPBENCH_BAZEL or 'bazel')")
    return p


def measure(base: ab.Side, head: ab.Side, families: list[str], args,
            filters: dict, tmp: Path, tag: str) -> float:
    base.rounds, head.rounds = [], []
    return ab.run_rounds([base, head], families, args.rounds, args.repetitions,
                         args.min_time, filters, [], tmp, tag)


def judge(paths: dict, args) -> compare.Report:
    old = gbench.load_run(paths["base"])
    new = gbench.load_run(paths["head"])
    return compare.compare_runs(old, new, "direct", args.threshold, args.alpha,
                                metrics=["time"], ours_only=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 2 or args.repetitions < 1:
        print("gate: error: --rounds must be at least 2 (one of each order) and "
              "--repetitions at least 1", file=sys.stderr)
        return 2
    root = gbench.repo_root()
    bazel = suite.bazel_command(args.bazel)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in suite.FAMILIES]
    if unknown or not families:
        print(f"gate: error: unknown families {unknown}; known: "
              f"{','.join(suite.FAMILIES)}", file=sys.stderr)
        return 2
    try:
        head_flags = suite.inject_build_flags(args.inject)
    except suite.SuiteError as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return 2
    rev = parent_of(root, args.base)
    if rev is None and args.base == "HEAD~1" and is_shallow(root):
        # A shallow clone (CI systems make them) lacks the parent; fetch it.
        subprocess.run(["git", "fetch", "--quiet", "--deepen=1"], cwd=root,
                       check=False)
        rev = parent_of(root, args.base)
        if rev is None:
            print("gate: WARNING: this is a shallow clone and the parent commit "
                  "could not be fetched: nothing to compare with; passing "
                  "(clone with history to gate)")
            return 0
    if rev is None:
        if args.base == "HEAD~1" and parent_of(root, "HEAD"):
            print("gate: HEAD has no parent commit (the first commit): nothing "
                  "to compare with; passing")
            return 0
        print(f"gate: error: {args.base!r} is not a revision of this repository",
              file=sys.stderr)
        return 2
    work = (gbench.user_path(args.work_dir) if args.work_dir
            else Path.home() / ".cache" / "mpbench" / "gate-base")
    out_dir = gbench.user_path(args.out_dir) if args.out_dir else root / "results" / "gate"
    filters = {f: args.filter or GATE_FILTERS.get(f) for f in families}
    started = suite.utc_now()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    log(f"base {args.base} = {rev[:10]}; candidate = {ab.describe_head(root)}"
        + (f", built with a slowdown {args.inject}" if args.inject else ""))
    try:
        with tempfile.TemporaryDirectory(prefix="mpbench-gate-") as tmp:
            tmp = Path(tmp)
            base, head, common = ab.prepare(root, rev, work, bazel, families, tmp,
                                            head_flags=head_flags)
            reports = []
            for attempt in ("", "confirm-"):
                seconds = measure(base, head, common, args, filters, tmp, attempt)
                paths = ab.write_sides(
                    base, head, rev, out_dir, f"{stamp}-{attempt}", started,
                    {"base": args.base, "rounds": args.rounds,
                     "repetitions_per_round": args.repetitions, "seconds": seconds,
                     "measurement": "confirm" if attempt else "first"},
                    {"quick": True, "min_time": args.min_time,
                     "repetitions": args.rounds * args.repetitions,
                     "filter": filters, "families": [{"family": f} for f in common]},
                    args.inject)
                rep = judge(paths, args)
                reports.append(rep)
                log(f"{'confirming ' if attempt else ''}measurement took {seconds:.0f} s: "
                    f"exit {rep.exit_code}")
                if rep.exit_code != 1 or args.no_confirm:
                    break
                log("alarm: measuring both sides again to confirm it")
    except suite.SuiteError as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return 2
    except (gbench.InputError, compare.CompareError) as e:
        print(f"gate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gate: interrupted", file=sys.stderr)
        return 130
    rep = reports[0]
    if len(reports) == 2:
        compare.confirm(rep, reports[1])
    text = (compare.format_markdown(rep, changes_only=args.changes_only)
            if args.format == "markdown"
            else compare.format_text(rep, all_rows=not args.changes_only))
    print(text)
    report_path = out_dir / f"{stamp}-report.{'md' if args.format == 'markdown' else 'txt'}"
    report_path.write_text(text + "\n", encoding="utf-8")
    log(f"report: {report_path}")
    return rep.exit_code


if __name__ == "__main__":
    sys.exit(main())
