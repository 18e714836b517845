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
interrupted or failed run leaves no half-written run file.

Progress: `[k/N] family ... ETA mm:ss` on stderr when each family starts
and every 30 s (the estimate: that family's duration in the newest earlier
run of the same mode on this machine, else a rough count). Each family's
JSON is kept in results/partial/<run>/ as soon as it completes; after
Ctrl-C or a failure that directory also holds partial-run.json (the
completed families as one run file) and `--resume` runs only what is
missing, with the interrupted run's options, and writes the whole run.
At the end the run is charted (results/charts/) and reported
(results/reports/<run>/index.html, whose path is printed on stderr).

A deliberate slowdown, for checking the gate, is compiled in (lib/slowdown.h;
normal builds have none): `--inject pipe=1.05` builds the families with
--define=mpbench_inject=pipe --define=mpbench_inject_factor=1.05.

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

# Built into both sides of every A/B comparison (scripts/ab, scripts/gate),
# whatever each revision's .bazelrc says: every function on its own 64-byte
# line, so a change to one function does not move the others' code across
# line and fetch-window boundaries, which moved an unchanged row by 5-14%
# (the comment in .bazelrc has the measurement).
LAYOUT_FLAGS = ["--copt=-falign-functions=64"]

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
                       r"|(RawRingPoolMap|PoolMapInto)/double/items:10000"
                       r"/chunksize:(1|64)/workers:(1|2)"
                       r"|PoolCreate/workers:(1|2)|PoolTeardown/workers:(1|2)"
                       r"|PoolCreate/start:[a-z]+/workers:2/rss_mib:0"
                       r"|ApplyAsyncRoundTrip)(/|$)"),
        },
    },
}

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# What `--inject PRIMITIVE=FACTOR` may name (lib/slowdown.h, lib/BUILD).
INJECT_PRIMITIVES = ("pipe", "queue", "channel", "process", "pool")


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


def build_families(bazel: list[str], root: Path, families: list[str],
                   build_flags: list[str] | None = None) -> tuple[dict[str, Path], str]:
    """Builds //bench:<family> for each (with extra Bazel `build_flags`);
    returns {family: binary} and bazel-bin."""
    _run(bazel + ["build"] + list(build_flags or []) + [f"//bench:{f}" for f in families],
         root, "bazel build", capture=False)
    bazel_bin = _run(bazel + ["info", "bazel-bin"], root, "bazel info").strip()
    bins = {f: Path(bazel_bin) / "bench" / f for f in families}
    for f, b in bins.items():
        if not os.access(b, os.X_OK):
            raise SuiteError(f"built //bench:{f} but {b} is not executable")
    return bins, bazel_bin


def inject_build_flags(spec: str | None) -> list[str]:
    """The Bazel flags that compile the slowdown PRIMITIVE=FACTOR into the
    library (lib/slowdown.h); [] for None. SuiteError for a malformed spec."""
    if not spec:
        return []
    primitive, sep, factor = spec.partition("=")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    if not sep or primitive not in INJECT_PRIMITIVES or not 1.0 < value <= 10.0:
        raise SuiteError(f"--inject {spec!r}: expected PRIMITIVE=FACTOR with "
                         f"PRIMITIVE one of {', '.join(INJECT_PRIMITIVES)} and "
                         f"1 < FACTOR <= 10, e.g. pipe=1.05")
    return [f"--define=mpbench_inject={primitive}",
            f"--define=mpbench_inject_factor={value:g}"]


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
    p.add_argument("--inject", metavar="PRIMITIVE=FACTOR",
                   help="build the families with a deliberate slowdown of one "
                   f"primitive ({', '.join(INJECT_PRIMITIVES)}) by FACTOR, e.g. "
                   "pipe=1.05, to check the gate (a test build: Bazel defines, "
                   "see lib/slowdown.h)")
    p.add_argument("--out", metavar="FILE",
                   help="write the run here instead of results/runs/<UTC time>-"
                   "<short commit>-<host>.json")
    p.add_argument("--no-plot", action="store_true",
                   help="do not draw the charts (by default the run is charted "
                   "into results/charts/ with scripts/plot.py); the report "
                   "then has tables only")
    p.add_argument("--no-report", action="store_true",
                   help="do not write results/reports/<run>/ (scripts/report.py)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                   help="continue an interrupted run: the newest directory in "
                   "results/partial/ (or DIR) keeps every family that "
                   "completed; the rest run with the interrupted run's options")
    p.add_argument("--results-dir", metavar="DIR",
                   help="where runs/, partial/, reports/ and charts/ live "
                   "(default results/ of the source tree)")
    p.add_argument("--bazel", metavar="CMD",
                   help="how to call Bazel, e.g. 'bazel --output_base=/tmp/x' "
                   "(default: $MPBENCH_BAZEL or 'bazel')")
    p.add_argument("benchmark_flags", nargs="*", metavar="FLAG",
                   help="after '--': extra flags for every benchmark binary")
    return p


# --- progress, estimates, partial results ------------------------------------

STATE = "state.json"
PARTIAL_RUN = "partial-run.json"


def mmss(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def previous_durations(runs_dir: Path, host: str | None, machine_class: str | None,
                       quick: bool, cpu_model: str | None = None) -> dict[str, float]:
    """family -> seconds it took in the newest earlier run of the same mode
    on this machine (same host, machine class and CPU model); the Python
    reference as "python_reference". Runs are read newest first; unreadable
    ones skipped."""
    out: dict[str, float] = {}
    if not runs_dir.is_dir():
        return out
    for path in sorted(runs_dir.glob("*.json"), reverse=True):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))["context"]["mpbench"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (m.get("host") != host or m.get("machine_class") != machine_class
                or m.get("cpu_model") != cpu_model
                or bool(m.get("quick")) != quick or m.get("filter")):
            continue
        for f in m.get("families") or []:
            if isinstance(f, dict) and f.get("family") and f.get("seconds") is not None:
                out.setdefault(f["family"], float(f["seconds"]))
        py = m.get("python_reference") or {}
        if py.get("status") == "ran" and py.get("seconds") is not None:
            out.setdefault("python_reference", float(py["seconds"]))
    return out


class Progress:
    """Prints `[k/N] family what ... ETA mm:ss` when a family starts and
    every `every` seconds while it runs (stderr; stdout stays the run's
    path). The estimate of a family is its duration in the previous run on
    this machine; without one, a rough count of benchmarks x repetitions x
    minimum time."""

    def __init__(self, steps: list[str], estimates: dict[str, float | None],
                 every: float = 30.0, rough: set[str] | None = None):
        self.steps = steps
        self.estimates = estimates
        self.rough = rough or set()
        self.every = every
        self._stop = None
        self._thread = None

    def remaining(self, k: int, elapsed: float) -> tuple[float, list[str]]:
        """Seconds left (the rest of step k plus every later step) and the
        steps with no estimate, left out of that sum."""
        total, unknown = 0.0, []
        for i, step in enumerate(self.steps[k:], start=k):
            est = self.estimates.get(step)
            if est is None:
                unknown.append(step)
                continue
            total += max(est - elapsed, 0.0) if i == k else est
        return total, unknown

    def line(self, k: int, what: str, elapsed: float) -> str:
        left, unknown = self.remaining(k, elapsed)
        known = [st for st in self.steps[k:] if st not in unknown]
        rough = [st for st in known if st in self.rough]
        basis = []
        if known and not rough:
            basis.append("from the previous run here")
        elif rough:
            basis.append(f"rough for {', '.join(rough)}")
        if unknown:
            basis.append(f"+ {', '.join(unknown)}: no earlier run here")
        return (f"[{k + 1}/{len(self.steps)}] {self.steps[k]} {what} ... "
                f"{mmss(elapsed)} elapsed, ETA {mmss(left)} ({'; '.join(basis)})")

    def start(self, k: int, what: str) -> None:
        import threading
        self.stop()
        t0 = time.monotonic()
        log(self.line(k, what, 0.0))
        self._stop = threading.Event()

        def tick(stop=self._stop):
            while not stop.wait(self.every):
                log(self.line(k, what, time.monotonic() - t0))
        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            self._stop = self._thread = None


def rough_estimate(binary: Path, bench_filter: str | None, repetitions: int,
                   min_time: float | None) -> tuple[float | None, int | None]:
    """(seconds, benchmarks) from --benchmark_list_tests: each benchmark
    repeated `repetitions` times for at least `min_time` (0.5 s default),
    plus 30% for setup. A guess, labelled as such where it is printed."""
    args = [str(binary), "--benchmark_list_tests=true"]
    if bench_filter:
        args.append(f"--benchmark_filter={bench_filter}")
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if r.returncode != 0:
        return None, None
    n = len([ln for ln in r.stdout.splitlines() if ln.strip()])
    return n * repetitions * (min_time if min_time is not None else 0.5) * 1.3, n


def partial_root(results: Path) -> Path:
    return results / "partial"


def latest_partial(results: Path) -> Path | None:
    dirs = [d for d in partial_root(results).glob("*") if (d / STATE).is_file()]
    return max(dirs, key=lambda d: d.name) if dirs else None


def load_parts(pdir: Path, steps: list[str]) -> list[tuple[str, dict]]:
    """The families (and Python reference) a partial directory completed,
    in run order; a file that does not load counts as not done."""
    parts = []
    for step in steps:
        f = pdir / f"{step}.json"
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            gbench.parse_run(data, str(f))
        except (OSError, ValueError, gbench.InputError):
            log(f"resume: {f} is unusable; {step} runs again")
            continue
        parts.append((step, data))
    return parts


def tag_family(data: dict, family: str) -> dict:
    """Records in every entry which family binary made it, for the report's
    commands (strings are not counters: gbench ignores them)."""
    for e in data.get("benchmarks", []):
        e.setdefault("mpbench_family", family)
    return data


def finish_run(parts, info: dict, family_info: list, python_ref: dict) -> dict:
    merged = merge(parts)
    merged["context"]["mpbench"] = dict(info, families=family_info,
                                        python_reference=python_ref)
    return merged


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    root = gbench.repo_root()
    results = (gbench.user_path(args.results_dir) if args.results_dir
               else root / "results")
    pdir = None
    state: dict = {}
    if args.resume:
        pdir = (gbench.user_path(args.resume) if args.resume != "latest"
                else latest_partial(results))
        if pdir is None or not (pdir / STATE).is_file():
            print(f"suite: error: nothing to resume in {partial_root(results)}",
                  file=sys.stderr)
            return 2
        state = json.loads((pdir / STATE).read_text(encoding="utf-8"))
        keep = {"resume", "bazel", "results_dir", "no_plot", "no_report"}
        old = build_parser().parse_args(state["argv"])
        for k, v in vars(old).items():
            if k not in keep:
                setattr(args, k, v)
        argv = state["argv"]
        log(f"resuming {pdir} ({state.get('started_utc')})")
    elif latest_partial(results) is not None:
        log(f"note: an interrupted run is kept in {latest_partial(results)}; "
            "scripts/bench --resume continues it")
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
    try:
        inject_flags = inject_build_flags(args.inject)
    except SuiteError as e:
        print(f"suite: error: {e}", file=sys.stderr)
        return 2
    started = (dt.datetime.fromisoformat(state["started_utc"].replace("Z", "+00:00"))
               if state else utc_now())
    t0 = time.monotonic()
    progress = None
    parts: list[tuple[str, dict]] = []
    steps: list[str] = []
    try:
        present, missing = existing_families(bazel, root, families)
        for f in missing:
            log(f"WARNING: //bench:{f} does not exist (yet): family skipped")
        if not present:
            raise SuiteError("no benchmark family to run")
        bins, bazel_bin = build_families(bazel, root, present, inject_flags)
        info = machine.collect(root, bazel, f"//bench:{present[0]}", bazel_bin)
        out_path = (gbench.user_path(args.out) if args.out else
                    results / "runs" / default_out(root, started, info).name)
        steps = list(present) + ([] if args.no_python else ["python_reference"])
        if pdir is None:
            pdir = partial_root(results) / out_path.stem
            pdir.mkdir(parents=True, exist_ok=True)
            write_atomic(pdir / STATE, {
                "argv": argv, "started_utc": started.isoformat().replace("+00:00", "Z"),
                "out": str(out_path), "commit": info.get("commit"),
                "dirty": info.get("dirty")})
        else:
            out_path = Path(state.get("out") or out_path)
            if state.get("commit") != info.get("commit") or info.get("dirty"):
                log(f"WARNING: resuming a run of commit {state.get('commit')} at "
                    f"commit {info.get('commit')}{' (dirty)' if info.get('dirty') else ''}: "
                    "the families measured now were built from this tree")
        parts = load_parts(pdir, steps)
        done = {f for f, _ in parts}
        if done:
            log(f"already complete: {', '.join(f for f, _ in parts)}")
        interleave = {f: has_flag(bins[f], "benchmark_enable_random_interleaving")
                      for f in present}
        for f in present:
            if not interleave[f]:
                log(f"{f}: this Google Benchmark has no random interleaving")

        def settings_of(f):
            settings = FAMILY_SETTINGS.get(f, {}).get("quick" if args.quick else "full", {})
            return (args.repetitions or settings.get("repetitions", repetitions),
                    args.min_time if args.min_time is not None
                    else settings.get("min_time", min_time),
                    args.filter or settings.get("filter"))

        previous = previous_durations(results / "runs", info.get("host"),
                                      info.get("machine_class"), bool(args.quick),
                                      info.get("cpu_model"))
        estimates: dict[str, float | None] = {}
        counts: dict[str, int | None] = {}
        rough_steps = set()
        for f in present:
            f_reps, f_min, f_filter = settings_of(f)
            rough, counts[f] = rough_estimate(bins[f], f_filter, f_reps, f_min)
            estimates[f] = 0.0 if f in done else previous.get(f, rough)
            if f not in done and f not in previous:
                rough_steps.add(f)
        estimates["python_reference"] = (0.0 if "python_reference" in done
                                         else previous.get("python_reference"))
        progress = Progress(steps, estimates, rough=rough_steps)
        family_info = [dict(state_f) for state_f in state.get("family_info", [])]
        for k, f in enumerate(present):
            if f in done:
                continue
            f_reps, f_min, f_filter = settings_of(f)
            n = counts.get(f)
            progress.start(k, f"//bench:{f}" + (f" {n} benchmarks x {f_reps} repetitions"
                                                if n else ""))
            out = pdir / f".{f}.gbench.json"
            t = time.monotonic()
            data = run_benchmark(
                benchmark_args(bins[f], out, f_reps, f_min, f_filter,
                               args.benchmark_flags, interleave[f]), env, out)
            progress.stop()
            tag_family(data, f)
            write_atomic(pdir / f"{f}.json", data)
            out.unlink(missing_ok=True)
            parts.append((f, data))
            family_info.append({"family": f, "target": f"//bench:{f}",
                                "repetitions": f_reps, "min_time": f_min,
                                "filter": f_filter,
                                "benchmarks": len({e.get('run_name') for e in data["benchmarks"]}),
                                "seconds": round(time.monotonic() - t, 1)})
            state["family_info"] = family_info
            write_atomic(pdir / STATE, dict(json.loads((pdir / STATE).read_text()),
                                            family_info=family_info))
        python_ref = state.get("python_ref") or {"status": "skipped (--no-python)"}
        if not args.no_python and "python_reference" not in done:
            k = steps.index("python_reference")
            progress.start(k, "scripts/python_reference.py")
            out = pdir / ".python_reference.gbench.json"
            t = time.monotonic()
            data = run_python_reference(root, out, args.quick, env)
            progress.stop()
            if data is None:
                python_ref = {"status": "absent"}
            else:
                tag_family(data, "python_reference")
                write_atomic(pdir / "python_reference.json", data)
                out.unlink(missing_ok=True)
                parts.append(("python_reference", data))
                python_ref = {"status": "ran", "seconds": round(time.monotonic() - t, 1),
                              "context": data.get("context")}
            write_atomic(pdir / STATE, dict(json.loads((pdir / STATE).read_text()),
                                            python_ref=python_ref))
        parts.sort(key=lambda p: steps.index(p[0]))
        family_info.sort(key=lambda f: steps.index(f["family"]))
        info.update({
            "suite_version": gbench.SUITE_VERSION,
            "command": "scripts/bench " + " ".join(shlex.quote(a) for a in argv),
            "started_utc": started.isoformat().replace("+00:00", "Z"),
            "finished_utc": utc_now().isoformat().replace("+00:00", "Z"),
            "seconds": round(sum(f["seconds"] for f in family_info)
                             + (python_ref.get("seconds") or 0), 1),
            "resumed": bool(args.resume),
            "quick": bool(args.quick),
            "repetitions": repetitions,
            "min_time": min_time,
            "random_interleaving": all(interleave.values()),
            "filter": args.filter,
            "benchmark_flags": args.benchmark_flags,
            "families_missing": missing,
            "inject_slowdown": args.inject or None,
            "load_avg_after": list(os.getloadavg()),
        })
        merged = finish_run(parts, info, family_info, python_ref)
        write_atomic(out_path, merged)
        shutil.rmtree(pdir, ignore_errors=True)
    except SuiteError as e:
        if progress:
            progress.stop()
        print(f"suite: error: {e}; no result file written", file=sys.stderr)
        _say_partial(pdir, parts, steps)
        return 1
    except KeyboardInterrupt:
        if progress:
            progress.stop()
        print("suite: interrupted; no complete result file written", file=sys.stderr)
        _say_partial(pdir, parts, steps)
        return 130
    errors = [b for b in gbench.parse_run(merged).benchmarks.values() if b.error]
    for b in errors:
        log(f"WARNING: {b.name} reported an error: {b.error}")
    log(f"wrote {_shown(out_path, root)} ({len(merged['benchmarks'])} entries, "
        f"{info['seconds']} s of benchmarks, {round(time.monotonic() - t0, 1)} s in all)")
    if not args.no_report:  # the report draws the charts once for both
        status = write_report(out_path, results, charts=not args.no_plot)
    elif not args.no_plot:
        status = draw_charts(root, out_path, results)
    else:
        status = 0
    print(out_path)
    return status


def _shown(path: Path, root: Path):
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def _say_partial(pdir: Path | None, parts, steps) -> None:
    """Where the completed families are and how to go on; a merged file of
    them (partial-run.json) that report, plot and compare can read."""
    if pdir is None or not pdir.is_dir():
        return
    done = [f for f, _ in parts]
    if parts:
        try:
            merged = merge(sorted(parts, key=lambda p: steps.index(p[0])
                                  if p[0] in steps else 99))
            merged["context"]["mpbench"] = {"partial": True, "families_done": done}
            write_atomic(pdir / PARTIAL_RUN, merged)
        except SuiteError as e:
            log(f"partial results not merged: {e}")
    print(f"suite: {len(done)} of {len(steps)} steps complete"
          + (f" ({', '.join(done)})" if done else "")
          + f", kept in {pdir}"
          + (f" (all of them in one file: {pdir / PARTIAL_RUN})" if parts else "")
          + "; continue with: scripts/bench --resume", file=sys.stderr)


def draw_charts(root: Path, run_path: Path, results: Path | None = None) -> int:
    """Charts of the run into results/charts/ (and the history chart)."""
    results = results or root / "results"
    try:
        import plot
        files, notes = plot.make_charts(gbench.load_run(run_path),
                                        results / "charts", results / "runs")
    except Exception as e:  # the run is written; say what went wrong
        log(f"ERROR: charts failed: {type(e).__name__}: {e} "
            f"(the run file is complete; retry with bazel run //scripts:plot)")
        return 1
    for n in notes:
        log(f"plot: {n}")
    log(f"charts: {len(files)} files in {_shown(results / 'charts', root)}")
    return 0


def write_report(run_path: Path, results: Path, charts: bool = True) -> int:
    """results/reports/<run>/index.html and REPORT.md, and its charts copied
    into results/charts/ (drawn once); logs the report's path."""
    root = gbench.repo_root()
    try:
        import report
        page = report.write_report(report.combine([gbench.load_run(run_path)]),
                                   results / "reports" / run_path.stem,
                                   results / "runs", charts=charts)
        copied = 0
        if charts:
            dest = results / "charts"
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted((page.parent / "charts").iterdir()):
                tmp = dest / f".{f.name}.tmp"
                shutil.copyfile(f, tmp)
                os.replace(tmp, dest / f.name)
                copied += 1
    except Exception as e:  # the run is written; say what went wrong
        log(f"ERROR: report failed: {type(e).__name__}: {e} (the run file is "
            f"complete; retry with bazel run //scripts:report -- {run_path})")
        return 1
    if charts:
        log(f"charts: {copied} files in {_shown(results / 'charts', root)}")
    log(f"report: {_shown(page, root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
