"""Reads Google Benchmark JSON run files: the one loader every script uses.

    import gbench
    run = gbench.load_run("results/runs/X.json")   # raises gbench.InputError
    for name in run.names():                        # "BM_Pipe.../bytes:64"
        run.samples(name)             # per-repetition real time, in ns
        run.samples(name, "bytes_per_second")
        run.median(name)              # median of the samples (or the
                                      # file's own median aggregate)

Facts about the format (Google Benchmark 1.7.1) this module relies on:

- `benchmarks` is a list of entries. `run_type` is "iteration" for one
  repetition and "aggregate" for the statistics Google Benchmark adds
  (`aggregate_name` mean, median, stddev, cv; cv has `aggregate_unit`
  "percentage" and is not a time). Every entry of one benchmark, repetitions
  and aggregates alike, carries the same `run_name`; entries are grouped by
  it (files older than `run_name` fall back to `name`).
- `real_time` and `cpu_time` are in `time_unit` (ns, us, ms or s); this
  module converts every time to nanoseconds.
- `/real_time`, `/manual_time` and `/process_time` suffixes only say which
  clock drove the iteration count. They are stripped from names, so
  `BM_X/real_time` in one file matches `BM_X` in another (and the Python
  reference's `PyX` matches its C++ sibling `BM_X` by family).
- A benchmark that failed has `error_occurred: true` and `error_message`;
  its times are meaningless and are not samples.
- Any other numeric key is a user counter (`bytes_per_second`,
  `items_per_second`, `p50_ns`, `speedup`, ...), already divided by time
  where Google Benchmark made it a rate.

The headline metric, "time", is `real_time`: every mpbench family uses real
(or manual) time because CPU time does not see child processes.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "InputError", "Run", "Benchmark", "Name", "load_run", "parse_name",
    "base_name", "higher_is_better", "format_value", "user_path",
    "repo_root", "SUITE_VERSION",
]

# Bumped when the meaning of the run file or of a benchmark changes.
SUITE_VERSION = "1"

TIME_UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
_TIMING_SUFFIXES = ("/real_time", "/manual_time", "/process_time")
# Keys of a benchmark entry that are not user counters.
_STANDARD_KEYS = {
    "name", "family_index", "per_family_instance_index", "run_name",
    "run_type", "repetitions", "repetition_index", "threads", "iterations",
    "real_time", "cpu_time", "time_unit", "aggregate_name", "aggregate_unit",
    "error_occurred", "error_message", "label", "big_o", "rms",
    "complexity_n", "mpbench_source",
}
TIME_METRICS = ("time", "real_time", "cpu_time")


class InputError(Exception):
    """A run file that cannot be used; the message says which and why."""


def user_path(path: str | os.PathLike) -> Path:
    """Resolves a path the user typed: `bazel run` starts programs in their
    runfiles tree, so relative paths are taken from BUILD_WORKING_DIRECTORY
    (the directory `bazel run` was called from) when it is set."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        base = os.environ.get("BUILD_WORKING_DIRECTORY")
        if base:
            p = Path(base) / p
    return p


def repo_root() -> Path:
    """The source tree: BUILD_WORKSPACE_DIRECTORY under `bazel run`, else the
    parent of this file's directory (running a script with python3)."""
    ws = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    if ws:
        return Path(ws)
    return Path(__file__).resolve().parent.parent


def base_name(name: str) -> str:
    """`BM_X/bytes:8/real_time` -> `BM_X/bytes:8` (timing suffixes dropped)."""
    changed = True
    while changed:
        changed = False
        for suffix in _TIMING_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                changed = True
    return name


@dataclass(frozen=True)
class Name:
    """A parsed benchmark name.

    `BM_PoolMap/double/items:10000/chunksize:8/workers:2` gives prefix "BM_",
    family "PoolMap" and args (("", "double"), ("items", "10000"),
    ("chunksize", "8"), ("workers", "2")): positional arguments have key "".
    """

    prefix: str  # "BM_", "Py" or ""
    family: str
    args: tuple[tuple[str, str], ...]

    @property
    def full(self) -> str:
        return "/".join([self.prefix + self.family] + [
            f"{k}:{v}" if k else v for k, v in self.args])

    def arg(self, key: str | int, default: str | None = None) -> str | None:
        """The value of named argument `key`, or of the positional argument
        number `key` (an int, counting positional arguments only)."""
        if isinstance(key, int):
            positional = [v for k, v in self.args if not k]
            return positional[key] if key < len(positional) else default
        for k, v in self.args:
            if k == key:
                return v
        return default

    def with_args(self, family: str, args) -> "Name":
        return Name(self.prefix, family, tuple(args))


def parse_name(name: str) -> Name:
    parts = base_name(name).split("/")
    head = parts[0]
    prefix = ""
    for p in ("BM_", "Py"):
        if head.startswith(p) and len(head) > len(p):
            prefix, head = p, head[len(p):]
            break
    args = []
    for part in parts[1:]:
        key, sep, value = part.partition(":")
        args.append((key, value) if sep else ("", part))
    return Name(prefix, head, tuple(args))


def natural_key(name: str):
    """Sort key: BM_X < BM_X/bytes:8 < BM_X/bytes:64 < BM_Y."""
    return [(0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
            for t in re.split(r"(\d+(?:\.\d+)?)", name) if t]


def higher_is_better(metric: str) -> bool | None:
    """Direction of a metric: False for times and latencies (lower is
    better), True for rates and speedups, None when unknown (reported, never
    gated)."""
    if metric in TIME_METRICS or re.search(r"_(ns|us|ms|s)$", metric):
        return False
    if metric.endswith("_per_second") or metric in ("speedup", "efficiency"):
        return True
    return None


def format_value(value: float | None, metric: str = "time") -> str:
    """Human-readable value: times (ns) and *_ns counters with a unit,
    bytes_per_second in B/s multiples, anything else with 4 significant
    digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric in TIME_METRICS or metric.endswith("_ns"):
        for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {unit}"
        return f"{value:.4g} ns"
    if metric == "bytes_per_second":
        for unit, scale in (("GiB/s", 2**30), ("MiB/s", 2**20),
                            ("KiB/s", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {unit}"
        return f"{value:.4g} B/s"
    if metric.endswith("_per_second"):
        for unit, scale in (("G/s", 1e9), ("M/s", 1e6), ("k/s", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {unit}"
        return f"{value:.4g} /s"
    return f"{value:.4g}"


@dataclass
class Benchmark:
    """Everything one run file says about one benchmark."""

    name: str  # base name (timing suffix stripped)
    run_name: str  # as in the file
    time_unit: str = "ns"
    # metric -> per-repetition values in file order; times in ns.
    samples: dict[str, list[float]] = field(default_factory=dict)
    # repetition_index of each sample (same order as samples)
    repetition_index: list[int] = field(default_factory=list)
    # which pooled run each sample came from ("mpbench_source" of a baseline
    # made from several runs; 0 otherwise), same order as samples
    source: list[int] = field(default_factory=list)
    # aggregate name ("median", "mean", ...) -> metric -> value (times in ns)
    aggregates: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    repetitions: int = 0  # what the file says was asked for

    @property
    def parsed(self) -> Name:
        return parse_name(self.name)

    def metrics(self) -> list[str]:
        """"time" first, then cpu_time and the counters, in file order."""
        keys = list(self.samples) or list(self.aggregates.get("median", {}))
        keys = [k for k in keys if k not in ("time", "real_time", "cpu_time")]
        return ["time", "cpu_time"] + keys

    def counters(self) -> list[str]:
        return [m for m in self.metrics() if m not in TIME_METRICS]


class Run:
    """One run file: `context` (Google Benchmark's, plus ours under
    context["mpbench"] when the suite runner wrote it) and its benchmarks,
    keyed by base name in file order."""

    def __init__(self, path: str, context: dict, benchmarks: dict[str, Benchmark],
                 raw: dict | None = None):
        self.path = path
        self.context = context
        self.benchmarks = benchmarks
        self.raw = raw

    # -- the simple API -------------------------------------------------
    def names(self) -> list[str]:
        """Base names in natural order (numbers compare as numbers), so that
        randomly interleaved files read the same every time."""
        return sorted(self.benchmarks, key=natural_key)

    def has(self, name: str) -> bool:
        return base_name(name) in self.benchmarks

    def get(self, name: str) -> Benchmark | None:
        return self.benchmarks.get(base_name(name))

    def samples(self, name: str, metric: str = "time") -> list[float]:
        """Per-repetition values of `metric` ("time" = real time in ns, or a
        counter name); [] when the file holds only aggregates, the benchmark
        failed, or it is absent."""
        b = self.get(name)
        if b is None or b.error:
            return []
        return list(b.samples.get(_metric_key(metric), []))

    def median(self, name: str, metric: str = "time") -> float | None:
        """Median of the samples; the file's own median aggregate when it has
        no samples; None when neither exists."""
        s = self.samples(name, metric)
        if s:
            return statistics.median(s)
        b = self.get(name)
        if b is None or b.error:
            return None
        return b.aggregates.get("median", {}).get(_metric_key(metric))

    def samples_by_source(self, name: str, metric: str = "time") -> dict[int, list[float]]:
        """The samples split by the run they came from, for a baseline pooled
        from several runs ({0: samples} for an ordinary run)."""
        b = self.get(name)
        if b is None or b.error:
            return {}
        out: dict[int, list[float]] = {}
        for src, v in zip(b.source, b.samples.get(_metric_key(metric), [])):
            out.setdefault(src, []).append(v)
        return out

    @property
    def sources(self) -> int:
        """How many runs were pooled into this file (1 for an ordinary run)."""
        n = len({s for b in self.benchmarks.values() for s in b.source})
        return max(n, 1)

    def error(self, name: str) -> str | None:
        b = self.get(name)
        return b.error if b else None

    @property
    def mpbench(self) -> dict:
        """Our own context (commit, compiler, fingerprint, ...); {} for a
        file written by a bare benchmark binary."""
        m = self.context.get("mpbench")
        return m if isinstance(m, dict) else {}

    def fingerprint(self) -> dict:
        """What must match for two runs to be comparable as they are: CPU,
        cores, caches, kernel, compiler and flags. Taken from our context
        when present, else from Google Benchmark's (which lacks the CPU
        model, kernel and compiler)."""
        fp = self.mpbench.get("fingerprint")
        if isinstance(fp, dict) and fp:
            return dict(fp)
        caches = self.context.get("caches") or []
        return {
            "cores": self.context.get("num_cpus"),
            "caches": ",".join(
                f"L{c.get('level')}{(c.get('type') or '?')[0]}:{c.get('size')}"
                for c in caches if isinstance(c, dict)),
        }

    def machine_id(self) -> str:
        """The id of the machine part of the fingerprint (scripts/machine.py),
        computed from the fingerprint when the run predates the field."""
        import machine
        m = self.mpbench
        if m.get("machine_id"):
            return str(m["machine_id"])
        return machine.machine_id(self.fingerprint())

    def label(self) -> str:
        """Short description: commit and date when known, else the path."""
        m = self.mpbench
        parts = []
        if m.get("commit_short"):
            parts.append(m["commit_short"] + ("+dirty" if m.get("dirty") else ""))
        date = m.get("started_utc") or self.context.get("date")
        if date:
            parts.append(str(date))
        return " ".join(parts) or os.path.basename(self.path)


def _metric_key(metric: str) -> str:
    return "time" if metric == "real_time" else metric


def _number(entry: dict, key: str, path: str) -> float:
    v = entry.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{path}: benchmark {entry.get('name')!r} has no "
                         f"numeric {key!r}")
    return float(v)


def parse_run(data, path: str = "<run>") -> Run:
    """Validates decoded JSON and builds a Run; raises InputError."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a Google Benchmark run (top level is "
                         f"{type(data).__name__}, expected an object)")
    if "benchmarks" not in data:
        raise InputError(f"{path}: not a Google Benchmark run (no "
                         f"'benchmarks' list)")
    entries = data["benchmarks"]
    if not isinstance(entries, list):
        raise InputError(f"{path}: 'benchmarks' is not a list")
    if not entries:
        raise InputError(f"{path}: 'benchmarks' is empty (did the filter match "
                         f"nothing?)")
    context = data.get("context") or {}
    if not isinstance(context, dict):
        raise InputError(f"{path}: 'context' is not an object")

    benchmarks: dict[str, Benchmark] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise InputError(f"{path}: benchmarks[{i}] has no name")
        run_name = e.get("run_name") or e["name"]
        run_type = e.get("run_type", "iteration")
        if run_type == "aggregate" and "run_name" not in e:
            # Pre-run_name files: strip the "_median" style suffix.
            agg = e.get("aggregate_name", "")
            if agg and run_name.endswith("_" + agg):
                run_name = run_name[: -len(agg) - 1]
        key = base_name(run_name)
        b = benchmarks.get(key)
        if b is None:
            b = benchmarks[key] = Benchmark(name=key, run_name=run_name)
        if e.get("error_occurred"):
            b.error = str(e.get("error_message") or "error_occurred")
            continue
        unit = e.get("time_unit", "ns")
        if unit not in TIME_UNITS_NS:
            raise InputError(f"{path}: benchmark {e['name']!r} has unknown "
                             f"time_unit {unit!r}")
        b.time_unit = unit
        b.repetitions = max(b.repetitions, int(e.get("repetitions") or 1))
        scale = TIME_UNITS_NS[unit]
        values = {}
        is_percentage = e.get("aggregate_unit") == "percentage"
        for t in ("real_time", "cpu_time"):
            v = _number(e, t, path)
            values["time" if t == "real_time" else t] = (
                v if is_percentage else v * scale)
        for k, v in e.items():
            if k in _STANDARD_KEYS or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                values[k] = float(v)
        if run_type == "aggregate":
            b.aggregates[str(e.get("aggregate_name", "?"))] = values
        else:
            for k, v in values.items():
                b.samples.setdefault(k, []).append(v)
            b.repetition_index.append(int(e.get("repetition_index",
                                                len(b.repetition_index))))
            src = e.get("mpbench_source", 0)
            b.source.append(src if isinstance(src, int) else 0)
    return Run(path, context, benchmarks, data)


def load_run(path: str | os.PathLike) -> Run:
    """Loads and validates one run file; raises InputError with a message
    that names the file and the problem (missing, not JSON, truncated, no
    benchmarks, malformed entries)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a run file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    if not text.strip():
        raise InputError(f"{path}: empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()) - 1:
            raise InputError(f"{path}: truncated JSON (ends at line {e.lineno}"
                             f"; was the run interrupted?)") from None
        raise InputError(f"{path}: not JSON ({e.msg} at line {e.lineno} "
                         f"column {e.colno})") from None
    return parse_run(data, str(path))


def geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))
