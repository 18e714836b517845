#!/usr/bin/python3
"""A/B comparison for a pull request: the base revision against the working
tree, on the same machine in the same minutes.

    bazel run //scripts:ab -- --base origin/main [--quick] [--rounds 3]

1. Exports the base revision (`git archive`) into a work directory that is
   kept between calls (so its Bazel cache is too) and builds its benchmark
   families there; builds the same families in the working tree.
2. Runs the two sets of binaries alternately, A B, B A, ... (--rounds pairs),
   each time with --repetitions repetitions and random interleaving, so that
   drift of the machine during the run hits both sides alike.
3. Pools each side's repetitions into one run file under results/ab/ and
   compares them with scripts/compare.py (same table, same exit status: 1 on
   a regression, 2 on unusable input).

Only the C++ families are run (the Python reference does not depend on the
revision). A family missing from either side is skipped with a warning.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import compare
import gbench
import machine
import suite


def log(msg: str) -> None:
    print(f"ab: {msg}", file=sys.stderr, flush=True)


def resolve_rev(root: Path, rev: str) -> str:
    r = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       cwd=root, capture_output=True, text=True, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise suite.SuiteError(f"{rev!r} is not a revision of this repository")
    return r.stdout.strip()


def export_rev(root: Path, rev: str, dest: Path) -> None:
    """Replaces dest's contents with the tree of `rev` (dest is kept so that
    Bazel, which keys its cache on the workspace path, builds incrementally)."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in dest.iterdir():
        if child.is_symlink() or child.is_file():
            child.unlink()
        else:
            shutil.rmtree(child)
    with tempfile.TemporaryFile() as tar:
        r = subprocess.run(["git", "archive", "--format=tar", rev], cwd=root,
                           stdout=tar, check=False)
        if r.returncode != 0:
            raise suite.SuiteError(f"git archive {rev} failed")
        tar.seek(0)
        with tarfile.open(fileobj=tar) as t:
            t.extractall(dest)


def base_bazel(bazel: list[str]) -> list[str]:
    """The Bazel command for the base tree: a different workspace needs its
    own output base, so an explicit --output_base gets an "_ab_base" suffix."""
    out = []
    for a in bazel:
        m = re.fullmatch(r"--output_base=(.+)", a)
        out.append(f"--output_base={m.group(1).rstrip('/')}_ab_base" if m else a)
    return out


def pool_runs(rounds: list[dict]) -> dict:
    """One run from several runs of the same binary: every repetition
    ("iteration" entries) kept, renumbered; aggregates dropped (they were
    per round)."""
    merged = {"context": copy.deepcopy(rounds[0].get("context") or {}), "benchmarks": []}
    count: dict[str, int] = {}
    entries = []
    for data in rounds:
        for e in data.get("benchmarks", []):
            if e.get("run_type") == "aggregate":
                continue
            e = dict(e)
            key = e.get("run_name") or e.get("name")
            e["repetition_index"] = count.get(key, 0)
            count[key] = count.get(key, 0) + 1
            entries.append(e)
    for e in entries:
        e["repetitions"] = count[e.get("run_name") or e.get("name")]
    merged["benchmarks"] = entries
    merged["context"].pop("executable", None)
    return merged


class Side:
    """One side of an A/B run: its family binaries (copied out of bazel-bin,
    so a later build cannot change them), what it was built from, and the
    runs made with it."""

    def __init__(self, label: str, bins: dict[str, Path], info: dict):
        self.label = label
        self.bins = bins
        self.info = info
        self.rounds: list[dict] = []


def build_side(label: str, bazel: list[str], tree: Path, families: list[str],
               dest: Path, build_flags: list[str] | None = None) -> Side:
    """Builds //bench:<family> for each family in `tree` (with extra Bazel
    `build_flags`, e.g. the gate's injected slowdown) and copies the binaries
    into `dest`."""
    bins, bazel_bin = suite.build_families(bazel, tree, families, build_flags)
    dest.mkdir(parents=True, exist_ok=True)
    copies = {}
    for f, b in bins.items():
        copies[f] = dest / f
        shutil.copy2(b, copies[f])
    info = machine.collect(tree, bazel, f"//bench:{families[0]}", bazel_bin)
    return Side(label, copies, info)


def prepare(root: Path, base_rev: str, work: Path, bazel: list[str],
            families: list[str], tmp: Path, keep_server: bool = False,
            head_flags: list[str] | None = None) -> tuple[Side, Side, list[str]]:
    """Exports `base_rev` into `work`, builds the families both it and the
    working tree `root` have (both with suite.LAYOUT_FLAGS, the head also with
    `head_flags`), and returns (base, head, common families)."""
    bazel_b = base_bazel(bazel)
    export_rev(root, base_rev, work)
    fam_b, miss_b = suite.existing_families(bazel_b, work, families)
    fam_h, miss_h = suite.existing_families(bazel, root, families)
    common = [f for f in fam_h if f in fam_b]
    for f in families:
        if f not in common:
            log(f"WARNING: //bench:{f} missing in "
                f"{'base' if f in miss_b else 'working tree'}: skipped")
    if not common:
        raise suite.SuiteError("no benchmark family exists on both sides")
    base = build_side("base", bazel_b, work, common, tmp / "base",
                      suite.LAYOUT_FLAGS)
    if not keep_server:
        subprocess.run(bazel_b + ["shutdown"], cwd=work, check=False,
                       capture_output=True)
    head = build_side("head", bazel, root, common, tmp / "head",
                      suite.LAYOUT_FLAGS + list(head_flags or []))
    return base, head, common


def run_rounds(sides: list[Side], families: list[str], rounds: int,
               repetitions: int, min_time: float | None,
               filters: dict[str, str | None], extra: list[str], tmp: Path,
               tag: str = "") -> float:
    """Runs the sides' binaries in turn, `rounds` times, each with
    `repetitions` repetitions (random interleaving inside a binary), and
    appends each round's merged run to its side. The order alternates
    A B, B A, A B, ... so that a drift of the machine during the run, and
    whatever running second costs, hits both sides alike. Returns the
    seconds it took."""
    interleave = {f: suite.has_flag(sides[-1].bins[f],
                                    "benchmark_enable_random_interleaving")
                  for f in families}
    t0 = time.monotonic()
    for r in range(rounds):
        order = sides if r % 2 == 0 else list(reversed(sides))
        for side in order:
            log(f"{tag}round {r + 1}/{rounds}: {side.label}")
            parts = []
            for f in families:
                out = tmp / f"{tag}{side.label}-{r}-{f}.json"
                data = suite.run_benchmark(suite.benchmark_args(
                    side.bins[f], out, repetitions, min_time, filters.get(f),
                    extra, interleave[f]), dict(os.environ), out)
                parts.append((f, data))
            side.rounds.append(suite.merge(parts))
    return round(time.monotonic() - t0, 1)


def write_sides(base: Side, head: Side, rev: str, out_dir: Path, prefix: str,
                started, ab_info: dict, run_info: dict,
                inject: str | None = None) -> dict[str, Path]:
    """Writes both sides' pooled runs as out_dir/<prefix><side>-<commit>.json
    with what made them (`ab_info`: base, rounds, ...; `run_info`: quick,
    min_time, filter, ...); `inject`, the head's slowdown, if any. Returns
    {side label: path}."""
    paths = {}
    for side in (base, head):
        info = {"started_utc": started.isoformat().replace("+00:00", "Z"),
                "ab": {"side": side.label, "order": "A B, B A, ...", **ab_info},
                **run_info,
                "inject_slowdown": inject if side is head else None}
        if side is base:
            info.update({"commit": rev, "commit_short": rev[:10], "dirty": False})
        short = rev[:7] if side is base else (side.info.get("commit_short") or "x")[:7]
        paths[side.label] = write_side(
            side, out_dir / f"{prefix}{side.label}-{short}.json", info)
    return paths


def describe_head(root: Path) -> str:
    """"working tree (<commit>[+dirty])", for the log."""
    g = machine.git_info(root)
    return (f"working tree ({g.get('commit_short')}"
            f"{'+dirty' if g.get('dirty') else ''})")


def write_side(side: Side, out: Path, extra_info: dict) -> Path:
    """Pools the side's rounds into one run file at `out`."""
    data = pool_runs(side.rounds)
    info = dict(side.info)
    info.update(extra_info)
    info["suite_version"] = gbench.SUITE_VERSION
    data["context"]["mpbench"] = info
    suite.write_atomic(out, data)
    log(f"wrote {out}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ab", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, metavar="REV",
                   help="base revision (anything git rev-parse understands: "
                   "origin/main, HEAD~1, a hash)")
    p.add_argument("--rounds", type=int, default=3,
                   help="A B pairs to run (default 3)")
    p.add_argument("--repetitions", type=int, default=3,
                   help="repetitions per binary run (default 3; the U test sees "
                   "rounds x repetitions samples per side, 9 by default)")
    p.add_argument("--quick", action="store_true",
                   help=f"--benchmark_min_time={suite.QUICK_MIN_TIME:g} per "
                   "repetition (default: Google Benchmark's 0.5 s)")
    p.add_argument("--min-time", type=float, metavar="SECONDS",
                   help="--benchmark_min_time per repetition")
    p.add_argument("--filter", metavar="REGEX", help="--benchmark_filter for both sides")
    p.add_argument("--families", metavar="LIST",
                   help=f"comma-separated subset of {','.join(suite.FAMILIES)}")
    p.add_argument("--mode", choices=("direct", "robust"), default="direct",
                   help="comparison mode (see compare --help); direct is sound "
                   "here since both sides share machine and minutes (default)")
    p.add_argument("--threshold", type=float, default=compare.DEFAULT_THRESHOLD,
                   metavar="PCT", help="regression threshold in percent "
                   f"(default {compare.DEFAULT_THRESHOLD:g})")
    p.add_argument("--alpha", type=float, default=compare.DEFAULT_ALPHA,
                   help=f"U-test significance level (default {compare.DEFAULT_ALPHA:g})")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="report format (markdown for a pull-request comment)")
    p.add_argument("--out-dir", help="where the two pooled run files go (default "
                   "results/ab of the source tree)")
    p.add_argument("--work-dir", help="where the base revision is exported and "
                   "built (default ~/.cache/mpbench/ab-base; reused between calls)")
    p.add_argument("--keep-server", action="store_true",
                   help="leave the base tree's Bazel server running afterwards")
    p.add_argument("--bazel", metavar="CMD",
                   help="how to call Bazel (default $MPBENCH_BAZEL or 'bazel'); "
                   "an --output_base in it gets an _ab_base suffix for the base")
    p.add_argument("benchmark_flags", nargs="*", metavar="FLAG",
                   help="after '--': extra flags for every benchmark binary")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.repetitions < 1:
        print("ab: error: --rounds and --repetitions must be at least 1", file=sys.stderr)
        return 2
    root = gbench.repo_root()
    bazel = suite.bazel_command(args.bazel)
    work = (gbench.user_path(args.work_dir) if args.work_dir
            else Path.home() / ".cache" / "mpbench" / "ab-base")
    out_dir = gbench.user_path(args.out_dir) if args.out_dir else root / "results" / "ab"
    families = suite.FAMILIES
    if args.families:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
    min_time = args.min_time if args.min_time is not None else (
        suite.QUICK_MIN_TIME if args.quick else None)
    started = suite.utc_now()
    try:
        rev = resolve_rev(root, args.base)
        log(f"base {args.base} = {rev[:10]}; head = {describe_head(root)}")
        with tempfile.TemporaryDirectory(prefix="mpbench-ab-") as tmp:
            tmp = Path(tmp)
            base, head, common = prepare(root, rev, work, bazel, families, tmp,
                                         args.keep_server)
            seconds = run_rounds([base, head], common, args.rounds,
                                 args.repetitions, min_time,
                                 {f: args.filter for f in common},
                                 args.benchmark_flags, tmp)
        paths = write_sides(
            base, head, rev, out_dir, started.strftime("%Y%m%dT%H%M%SZ-"), started,
            {"base": args.base, "rounds": args.rounds,
             "repetitions_per_round": args.repetitions, "seconds": seconds},
            {"quick": bool(args.quick), "min_time": min_time,
             "repetitions": args.rounds * args.repetitions, "filter": args.filter,
             "families": [{"family": f} for f in common]})
    except suite.SuiteError as e:
        print(f"ab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ab: interrupted", file=sys.stderr)
        return 130
    return compare.main([str(paths["base"]), str(paths["head"]), "--mode", args.mode,
                         "--threshold", str(args.threshold), "--alpha", str(args.alpha),
                         "--format", args.format])


if __name__ == "__main__":
    sys.exit(main())
