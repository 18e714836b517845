#!/usr/bin/python3
"""Runs every benchmark family and writes one result file.

    bazel run //scripts:suite -- [--quick] [options] [-- <Google Benchmark flags>]
    (scripts/bench does the same after installing what is missing)

Prints the result file's path on stdout (everything else, the benchmarks'
own tables included, goes to stderr), then draws its charts (--no-plot).

Builds the families of FAMILIES (`//bench:<family>`, optimised: .bazelrc
says -c opt), runs each binary with repetitions and random interleaving,
runs the Python reference (scripts/python_reference.py) when it exists, and
merges everything into one Google Benchmark JSON file:

    results/runs/<UTC time>-<short commit>-<host>.json

with a single `benchmarks` list and Google Benchmark's `context` extended by
context["mpbench"]: suite version, commit and dirty flag, compiler, its
version and flags (from `bazel aquery`), compilation mode, kernel, CPU
model, cores, caches, governor, virtualisation, machine class, fingerprint,
and how the run was made (quick, repetitions, min time, filter, injected
slowdown). The file is written to a temporary name and renamed: an
interrupted or failed run leaves no file behind.

The environment reaches the benchmarks unchanged, so the library's
deliberate-slowdown switch works either way:
    MPBENCH_INJECT_SLOWDOWN=pipe bazel run //scripts:suite -- --quick
    bazel run //scripts:suite -- --quick --inject-slowdown=pipe

Set MPBENCH_BAZEL (or --bazel) to run Bazel differently, e.g.
MPBENCH_BAZEL="bazel --output_base=/tmp/ob".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gbench
import machine

# THE list of benchmark families: one cc_binary //bench:<family> each.
# Add a family here when its target exists.
FAMILIES = ["fork", "ipc", "pool"]

# Repetitions and per-repetition minimum time. Quick mode runs the same
# benchmarks for CI with short repetitions but as many of them: the U test
# needs at least 4 a side to reach p < 0.05 at all, and on a noisy shared
# machine 10 are what lets a 10% slowdown stand out.
FULL_REPETITIONS = 10
FULL_MIN_TIME = None  # Google Benchmark's default (0.5 s)
QUICK_REPETITIONS = 10
QUICK_MIN_TIME = 0.01

# Per-family exceptions to the above. The pool family is a grid of ~700
# maps, some of a million items that take seconds each: in full runs it gets
# 3 repetitions of at least 0.2 s, and in quick runs (CI) a subset that
# still spans every family, workload kind, chunking regime and the
# one-worker and one-worker-per-core cases. These apply unless --repetitions,
# --min-time or --filter say otherwise.
FAMILY_SETTINGS = {
    "pool": {
        "full": {"repetitions": 3, "min_time": 0.2, "filter": None},
        "quick": {
            "repetitions": QUICK_REPETITIONS,
            "min_time": QUICK_MIN_TIME,
            "filter": (r"^BM_(SerialMap/(double/items:10000|sha512_inherited/items:64)"
                       r"|(PoolMap|PoolImapUnordered|ForkMap|ThreadPoolMap)/"
                       r"(double/items:10000|sha512_inherited/items:64)"
                       r"/chunksize:(1|64|default)/workers:(1|2)"
                       r"|SerialMap(Pointer|Into)/double/items:10000"
                       r"|RawRingPoolMap/double/items:10000/chunksize:(1|64)/workers:(1|2)"
                       r"|PoolCreate/workers:(1|2)|PoolTeardown/workers:(1|2)"
                       r"|ApplyAsyncRoundTrip)(/|$)"),
        },
    },
}

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
INJECT_ENV = "MPBENCH_INJECT_SLOWDOWN"


class SuiteError(Exception):
    pass


def log(msg: str) -> None:
    print(f"suite: {msg}", file=sys.stderr, flush=True)


def bazel_command(arg: str | None = None) -> list[str]:
    return shlex.split(arg or os.environ.get("MPBENCH_BAZEL") or "bazel")


def _run(cmd, cwd, what, capture=True) -> str:
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, cwd=cwd, text=True, check=False,
                       stdout=subprocess.PIPE if capture else sys.stderr)
    if r.returncode != 0:
        raise SuiteError(f"{what} failed (exit {r.returncode}): "
                         + " ".join(shlex.quote(c) for c in cmd))
    return r.stdout or ""


def existing_families(bazel: list[str], root: Path, families: list[str]) -> tuple[list[str], list[str]]:
    """Splits `families` into those with a //bench cc_binary and the rest."""
    out = _run(bazel + ["query", "kind(cc_binary, //bench:*)", "--output=label"],
               root, "bazel query")
    labels = {line.strip() for line in out.splitlines()}
    present = [f for f in families if f"//bench:{f}" in labels]
    return present, [f for f in families if f not in present]


def build_families(bazel: list[str], root: Path, families: list[str]) -> tuple[dict[str, Path], str]:
    """Builds //bench:<family> for each; returns {family: binary} and bazel-bin."""
    _run(bazel + ["build"] + [f"//bench:{f}" for f in families], root,
         "bazel build", capture=False)
    bazel_bin = _run(bazel + ["info", "bazel-bin"], root, "bazel info").strip()
    bins = {f: Path(bazel_bin) / "bench" / f for f in families}
    for f, b in bins.items():
        if not os.access(b, os.X_OK):
            raise SuiteError(f"built //bench:{f} but {b} is not executable")
    return bins, bazel_bin


def has_flag(binary: Path, flag: str) -> bool:
    try:
        r = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                           timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return flag in (r.stdout + r.stderr)


def benchmark_args(binary: Path, out: Path, repetitions: int, min_time: float | None,
                   bench_filter: str | None, extra: list[str],
                   interleave: bool = True) -> list[str]:
    """The command line of one family binary: JSON into `out`, repetitions,
    minimum time, random interleaving (when the binary knows the flag)."""
    args = [str(binary), f"--benchmark_out={out}", "--benchmark_out_format=json",
            f"--benchmark_repetitions={repetitions}"]
    if min_time is not None:
        args.append(f"--benchmark_min_time={min_time:g}")
    if interleave:
        args.append("--benchmark_enable_random_interleaving=true")
    if bench_filter:
        args.append(f"--benchmark_filter={bench_filter}")
    return args + list(extra)


def run_benchmark(args: list[str], env: dict, out: Path) -> dict:
    """Runs one binary and loads its JSON; SuiteError when it fails."""
    log("$ " + " ".join(shlex.quote(a) for a in args))
    r = subprocess.run(args, env=env, check=False, stdout=sys.stderr)
    if r.returncode != 0:
        raise SuiteError(f"{Path(args[0]).name} exited with status {r.returncode}")
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
        gbench.parse_run(data, str(out))
    except (OSError, json.JSONDecodeError, gbench.InputError) as e:
        raise SuiteError(f"{Path(args[0]).name} wrote no usable JSON: {e}") from None
    return data


def run_python_reference(root: Path, out: Path, quick: bool, env: dict) -> dict | None:
    script = root / "scripts" / "python_reference.py"
    if not script.exists():
        log("scripts/python_reference.py does not exist yet: no Python reference")
        return None
    cmd = [PYTHON, str(script), "--out", str(out)] + (["--quick"] if quick else [])
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, cwd=root, env=env, check=False, stdout=sys.stderr)
    if r.returncode != 0:
        raise SuiteError(f"python_reference.py exited with status {r.returncode} "
                         f"(--no-python runs without it)")
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
        gbench.parse_run(data, str(out))
    except (OSError, json.JSONDecodeError, gbench.InputError) as e:
        raise SuiteError(f"python_reference.py wrote no usable JSON: {e}") from None
    return data


def merge(parts: list[tuple[str, dict]]) -> dict:
    """One run from several: Google Benchmark's context of the first part,
    every benchmark entry in order; names must be unique across parts."""
    merged = {"context": {}, "benchmarks": []}
    owner: dict[str, str] = {}
    for family, data in parts:
        if not merged["context"]:
            merged["context"] = dict(data.get("context") or {})
        for e in data.get("benchmarks", []):
            key = gbench.base_name(e.get("run_name") or e.get("name", ""))
            if owner.setdefault(key, family) != family:
                raise SuiteError(f"benchmark {key} is in both {owner[key]} and "
                                 f"{family}: names must be unique across families")
            merged["benchmarks"].append(e)
    merged["context"].pop("executable", None)
    return merged


def write_atomic(path: Path, data: dict) -> None:
    """Writes JSON to a temporary file in the same directory, flushes it to
    disk and renames it over `path`: readers see the old file or the whole
    new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def default_out(root: Path, started: dt.datetime, info: dict) -> Path:
    short = info.get("commit_short") or "nocommit"
    short = (short[:7] if info.get("commit") else short)
    host = (info.get("host") or socket.gethostname()).split(".")[0] or "host"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    return root / "results" / "runs" / f"{stamp}-{short}-{host}.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="suite", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"CI mode: the same benchmarks with small times "
                   f"({QUICK_REPETITIONS} repetitions of at least "
                   f"{QUICK_MIN_TIME:g} s; the Python reference gets --quick)")
    p.add_argument("--repetitions", type=int, metavar="N",
                   help=f"repetitions of every benchmark (default "
                   f"{FULL_REPETITIONS}, quick {QUICK_REPETITIONS}); compare "
                   f"needs at least 4 on both sides to reach p < 0.05")
    p.add_argument("--min-time", type=float, metavar="SECONDS",
                   help="--benchmark_min_time per repetition (default: Google "
                   f"Benchmark's 0.5 s, quick {QUICK_MIN_TIME:g})")
    p.add_argument("--filter", metavar="REGEX",
                   help="--benchmark_filter for every family (the Python "
                   "reference runs whole or not at all: see --no-python)")
    p.add_argument("--families", metavar="LIST",
                   help=f"comma-separated subset of {','.join(FAMILIES)}")
    p.add_argument("--no-python", action="store_true",
                   help="skip the Python reference (scripts/python_reference.py)")
    p.add_argument("--inject-slowdown", metavar="PRIMITIVE",
                   help=f"set {INJECT_ENV}=PRIMITIVE for the benchmarks: the "
                   "library makes that primitive ~10%% slower, to check the "
                   "gate (the variable set in the environment works too)")
    p.add_argument("--out", metavar="FILE",
                   help="write the run here instead of results/runs/<UTC time>-"
                   "<short commit>-<host>.json")
    p.add_argument("--no-plot", action="store_true",
                   help="do not draw the charts (by default the run is charted "
                   "into results/charts/ with scripts/plot.py)")
    p.add_argument("--bazel", metavar="CMD",
                   help="how to call Bazel, e.g. 'bazel --output_base=/tmp/x' "
                   "(default: $MPBENCH_BAZEL or 'bazel')")
    p.add_argument("benchmark_flags", nargs="*", metavar="FLAG",
                   help="after '--': extra flags for every benchmark binary")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    root = gbench.repo_root()
    bazel = bazel_command(args.bazel)
    families = FAMILIES
    if args.families:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            print(f"suite: error: unknown families {unknown}; FAMILIES is {FAMILIES}",
                  file=sys.stderr)
            return 2
    repetitions = args.repetitions or (QUICK_REPETITIONS if args.quick else FULL_REPETITIONS)
    min_time = args.min_time if args.min_time is not None else (
        QUICK_MIN_TIME if args.quick else FULL_MIN_TIME)
    if repetitions < 1:
        print("suite: error: --repetitions must be at least 1", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.inject_slowdown:
        env[INJECT_ENV] = args.inject_slowdown
    started = utc_now()
    t0 = time.monotonic()
    try:
        present, missing = existing_families(bazel, root, families)
        for f in missing:
            log(f"WARNING: //bench:{f} does not exist (yet): family skipped")
        if not present:
            raise SuiteError("no benchmark family to run")
        bins, bazel_bin = build_families(bazel, root, present)
        info = machine.collect(root, bazel, f"//bench:{present[0]}", bazel_bin)
        interleave = {f: has_flag(bins[f], "benchmark_enable_random_interleaving")
                      for f in present}
        for f in present:
            if not interleave[f]:
                log(f"{f}: this Google Benchmark has no random interleaving")
        parts, family_info = [], []
        with tempfile.TemporaryDirectory(prefix="mpbench-suite-") as tmp:
            for f in present:
                out = Path(tmp) / f"{f}.json"
                t = time.monotonic()
                settings = FAMILY_SETTINGS.get(f, {}).get("quick" if args.quick else "full", {})
                f_reps = args.repetitions or settings.get("repetitions", repetitions)
                f_min = (args.min_time if args.min_time is not None
                         else settings.get("min_time", min_time))
                f_filter = args.filter or settings.get("filter")
                data = run_benchmark(
                    benchmark_args(bins[f], out, f_reps, f_min, f_filter,
                                   args.benchmark_flags, interleave[f]), env, out)
                parts.append((f, data))
                family_info.append({"family": f, "target": f"//bench:{f}",
                                    "repetitions": f_reps, "min_time": f_min,
                                    "filter": f_filter,
                                    "benchmarks": len({e.get('run_name') for e in data["benchmarks"]}),
                                    "seconds": round(time.monotonic() - t, 1)})
            python_ref = {"status": "skipped (--no-python)"}
            if not args.no_python:
                out = Path(tmp) / "python_reference.json"
                t = time.monotonic()
                data = run_python_reference(root, out, args.quick, env)
                if data is None:
                    python_ref = {"status": "absent"}
                else:
                    parts.append(("python_reference", data))
                    python_ref = {"status": "ran", "seconds": round(time.monotonic() - t, 1),
                                  "context": data.get("context")}
        merged = merge(parts)
        info.update({
            "suite_version": gbench.SUITE_VERSION,
            "started_utc": started.isoformat().replace("+00:00", "Z"),
            "finished_utc": utc_now().isoformat().replace("+00:00", "Z"),
            "seconds": round(time.monotonic() - t0, 1),
            "quick": bool(args.quick),
            "repetitions": repetitions,
            "min_time": min_time,
            "random_interleaving": all(interleave.values()),
            "filter": args.filter,
            "benchmark_flags": args.benchmark_flags,
            "families": family_info,
            "families_missing": missing,
            "python_reference": python_ref,
            "inject_slowdown": env.get(INJECT_ENV) or None,
            "load_avg_after": list(os.getloadavg()),
        })
        merged["context"]["mpbench"] = info
        out_path = gbench.user_path(args.out) if args.out else default_out(root, started, info)
        write_atomic(out_path, merged)
    except SuiteError as e:
        print(f"suite: error: {e}; no result file written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("suite: interrupted; no result file written", file=sys.stderr)
        return 130
    errors = [b for b in gbench.parse_run(merged).benchmarks.values() if b.error]
    for b in errors:
        log(f"WARNING: {b.name} reported an error: {b.error}")
    try:
        shown = out_path.relative_to(root)
    except ValueError:
        shown = out_path
    log(f"wrote {shown} ({len(merged['benchmarks'])} entries, "
        f"{info['seconds']} s)")
    status = 0
    if not args.no_plot:
        status = draw_charts(root, out_path)
    print(out_path)
    return status


def draw_charts(root: Path, run_path: Path) -> int:
    """Charts of the run into results/charts/ (and the history chart)."""
    try:
        import plot
        files, notes = plot.make_charts(gbench.load_run(run_path),
                                        root / "results" / "charts",
                                        root / "results" / "runs")
    except Exception as e:  # the run is written; say what went wrong
        log(f"ERROR: charts failed: {type(e).__name__}: {e} "
            f"(the run file is complete; retry with bazel run //scripts:plot)")
        return 1
    for n in notes:
        log(f"plot: {n}")
    log(f"charts: {len(files)} files in results/charts/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
