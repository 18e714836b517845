#!/usr/bin/python3
"""A readable report of one run: tables, charts, machine, commands.

    bazel run //scripts:report -- RUN.json [MORE.json ...] [--out-dir DIR]
    bazel run //scripts:report -- --update-readme [RUN.json]
    bazel run //scripts:report -- --check-readme

Writes results/reports/<run>/index.html (one self-contained page: the charts
inline as SVG, every table, the machine's fingerprint and the command that
made each table's numbers) and REPORT.md beside it (the same tables, the
charts as PNG files in charts/). Prints the HTML file's path.

Several run files are read as one: a benchmark in a later file replaces the
same benchmark of an earlier one (for example a full run, then a second ipc
run, then a Python reference run). The machine and the report's name come
from the first file.

Tables are built from the benchmark names the run holds, never from a fixed
list, and a table whose benchmarks are absent is left out:
  process cost    every family with an `rss_mib:N` argument, a row per
                  parent RSS, plus each family over its reference
                  (scripts/references.py: mp::Process over fork+exit+wait)
  throughput      every family with a `bytes:N` argument and a
                  bytes_per_second counter, GB/s (decimal), the best variant
                  (spin, slots) at each size, and its ratio to the family's
                  raw limit (references.py: memcpy, the raw pipe)
  round trips     every family with a p50_ns counter: p50 / p99 in µs
  pool cost       per workload and item count, time per item at each
                  chunksize for every map mechanism at W workers (W = the
                  machine's cores when measured), and the break-even item
                  cost c* = o * W / (W - 1), o = per-item time minus serial
                  per-item time / W: a pool of W beats the plain loop once an
                  item costs more than c*
  pool speedups   serial time against each mechanism at W workers (default
                  chunksize), and speedup against worker count
  CPython         side by side (scripts/side_by_side.py), when Py* benchmarks
                  are present
  other           every benchmark no table above shows, with its counters
Medians over repetitions; "n" is the number of repetitions.

README: the block between <!-- report:begin ... --> and <!-- report:end -->
in README.md is generated from the run named in its begin marker;
--update-readme rewrites it (and docs/results.md, the full report of that
run); --check-readme exits 1 when either differs from what the run
generates (scripts:readme_test does the same).
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gbench
import plot
import references
from plot import PRETTY, break_even, cores, pick_workers  # one definition each

KNOWN_COUNTERS = ("bytes_per_second", "items_per_second", "speedup", "p50_ns",
                  "p99_ns")
MAP_FAMILIES = ("PoolMap", "PoolImapUnordered", "ForkMap", "ThreadPoolMap")
SERIAL = "SerialMap"
README_BEGIN = "<!-- report:begin"
README_END = "<!-- report:end -->"
DASH = "\u2014"


# --- reading -----------------------------------------------------------------

def combine(runs: list[gbench.Run]) -> gbench.Run:
    """One Run from several: later files replace benchmarks of earlier ones;
    context (machine, commands) from the first file with our context."""
    benchmarks: dict = {}
    family_of: dict = {}
    for r in runs:
        benchmarks.update(r.benchmarks)
        family_of.update(_recorded_families(r))
    ctx_run = next((r for r in runs if r.mpbench), runs[0])
    out = gbench.Run(runs[0].path, ctx_run.context, benchmarks, ctx_run.raw)
    out.family_of = family_of  # type: ignore[attr-defined]
    out.report_sources = [r.path for r in runs]  # type: ignore[attr-defined]
    return out


def _recorded_families(run: gbench.Run) -> dict[str, str]:
    """base name -> bench family ("fork", "ipc", "python_reference", ...) as
    the suite recorded it in each entry ("mpbench_family"); guessed from the
    name for runs made before it did."""
    out = {}
    for e in (run.raw or {}).get("benchmarks", []):
        fam = e.get("mpbench_family")
        if isinstance(fam, str):
            out[gbench.base_name(e.get("run_name") or e.get("name", ""))] = fam
    families = [f.get("family") for f in run.mpbench.get("families", [])
                if isinstance(f, dict)]
    for name in run.names():
        if name in out:
            continue
        n = gbench.parse_name(name)
        if n.prefix == "Py":
            out[name] = "python_reference"
        elif len(families) == 1:
            out[name] = families[0]
        elif re.search(r"Fork(Exit|Exec)|Vfork|Spawn|StartJoin", n.family):
            out[name] = "fork"
        elif re.search(r"Map|Pool|ApplyAsync|Imap", n.family):
            out[name] = "pool"
        else:
            out[name] = "ipc"
    return out


def med(run, name, metric="time"):
    return run.median(name, metric)


def spread(run, name, metric="time"):
    s = run.samples(name, metric)
    return (min(s), max(s)) if s else None


# --- formatting --------------------------------------------------------------

def sig(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    return f"{v:,.{decimals}f}"


def fmt_ns(v: float | None) -> str:
    if v is None:
        return DASH
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(v) >= scale:
            return f"{sig(v / scale)} {unit}"
    return f"{sig(v)} ns"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return DASH
    return f"{sig(v, 3 if abs(v) >= 1 else 2)}×"


def pretty(family: str) -> str:
    return PRETTY.get(family, family)


def variant_text(args) -> str:
    return ", ".join(f"{k}:{v}" if k else v for k, v in args)


# --- tables ------------------------------------------------------------------

@dataclass
class Table:
    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    commands: list[str] = field(default_factory=list)


def _families(run, prefix="BM_"):
    """family -> [(Name, base name)] in natural order."""
    out: dict[str, list] = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.prefix == prefix:
            out.setdefault(n.family, []).append((n, name))
    return out


def _reference_families() -> set[str]:
    return {ref.family for rule in references.RULES for ref in rule.refs}


def _family_order(families) -> list[str]:
    """References first (the raw limits), then the rest alphabetically."""
    refs = _reference_families()
    return sorted(families, key=lambda f: (f not in refs, f))


def _has_counter(run, names, counter):
    return any(run.median(nm, counter) is not None for nm in names)


def table_process(run) -> Table | None:
    fams = {f: v for f, v in _families(run).items()
            if any(n.arg("rss_mib") is not None for n, _ in v)
            and all({k for k, _ in n.args} <= {"rss_mib", "start"} for n, _ in v)}
    if not fams:
        return None
    order = _family_order(fams)
    rss_values = sorted({n.arg("rss_mib") for v in fams.values() for n, _ in v},
                        key=lambda x: (x is not None, float(x) if x else 0))
    # One column per family and start method (mp::Process under fork,
    # forkserver, spawn); "start:M/" comes before "rss_mib:N" in the name.
    columns = []
    for f in order:
        starts = sorted({n.arg("start") for n, _ in fams[f]},
                        key=lambda x: (x is not None, x or ""))
        for st in starts:
            label = pretty(f) + (f" ({st})" if st else "")
            columns.append((f, st, label))

    def name(f, st, rss):
        return ("BM_" + f + (f"/start:{st}" if st else "")
                + (f"/rss_mib:{rss}" if rss is not None else ""))

    ratios = []
    for f, st, label in columns:
        # A fork-based reference says what fork-based starts add to it; the
        # other start methods are compared in their own columns.
        if st not in (None, "fork"):
            continue
        rule = references.rule_for("BM_" + f)
        if rule and rule.refs and rule.refs[0].family in fams:
            r = rule.refs[0].family
            ratios.append((f, st, label, r))
    header = ["parent RSS"] + [label for _, _, label in columns] + [
        f"{label} / {pretty(r)}" for _, _, label, r in ratios]
    rows, names = [], set()
    for rss in rss_values:
        row = ["(plain)" if rss is None else f"{rss} MiB"]
        for f, st, _ in columns:
            nm = name(f, st, rss)
            row.append(fmt_ns(med(run, nm)) if run.has(nm) else "")
            if run.has(nm):
                names.add(nm)
        for f, st, _, r in ratios:
            a, b = med(run, name(f, st, rss)), med(run, name(r, None, rss))
            row.append(fmt_ratio(a / b) if a and b else "")
        rows.append(row)
    notes = ["Median time to create and reap one child (real time)."]
    for f, st, label, r in ratios:
        vals = [med(run, name(f, st, x)) / med(run, name(r, None, x))
                for x in rss_values
                if med(run, name(f, st, x)) and med(run, name(r, None, x))]
        g = gbench.geomean(vals)
        if g:
            notes.append(f"Geometric mean of {label} / {pretty(r)} over "
                         f"{len(vals)} rows: {sig(g)}.")
    return Table("process", "What a process costs", header, rows, notes, names)


def _bps(run, name):
    v = run.median(name, "bytes_per_second")
    if v is None:
        t, b = run.median(name), gbench.parse_name(name).arg("bytes")
        try:
            v = float(b) * 1e9 / t if t and b else None
        except ValueError:
            v = None
    return v


def _size_label(b: str) -> str:
    try:
        n = int(b)
    except ValueError:
        return b
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _by_bytes(items):
    """{bytes: [(Name, name)]} sorted by size."""
    out: dict = {}
    for n, nm in items:
        out.setdefault(n.arg("bytes"), []).append((n, nm))
    return dict(sorted(out.items(), key=lambda kv: float(kv[0])))


def table_throughput(run, compact: bool = False) -> Table | None:
    fams = {f: v for f, v in _families(run).items()
            if any(n.arg("bytes") is not None for n, _ in v)
            and (f.endswith("Throughput")
                 or _has_counter(run, [nm for _, nm in v], "bytes_per_second"))
            and not _has_counter(run, [nm for _, nm in v], "p50_ns")}
    if not fams:
        return None
    order = _family_order(fams)
    sizes = sorted({n.arg("bytes") for v in fams.values() for n, _ in v
                    if n.arg("bytes") is not None}, key=float)
    header = ["message"] + [pretty(f) for f in order]
    rows, names = [], set()
    multi = set()
    for size in sizes:
        row = [_size_label(size)]
        for f in order:
            cands = [(n, nm) for n, nm in fams[f] if n.arg("bytes") == size]
            vals = [(_bps(run, nm), n, nm) for n, nm in cands if _bps(run, nm)]
            if not vals:
                row.append("")
                continue
            v, n, nm = max(vals, key=lambda x: x[0])
            names.update(c for _, c in cands)
            cell = sig(v / 1e9)
            ref = references.primary_reference(nm)
            if ref and ref != nm and run.has(ref) and _bps(run, ref):
                cell += f" ({fmt_ratio(v / _bps(run, ref))})"
            rest = [(k, a) for k, a in n.args if k != "bytes"]
            if len(cands) > 1:
                multi.add(f)
                if not compact:
                    cell += f" [{variant_text(rest)}]"
            row.append(cell)
        rows.append(row)
    notes = ["GB/s = 10⁹ bytes per second, median of the repetitions. "
             "(×): the mechanism over its raw limit in the same run, "
             "declared in scripts/references.py ("
             + ", ".join(f"{pretty(f)} over {pretty(gbench.parse_name(r).family)}"
                         for f in order
                         for r in [references.primary_reference("BM_" + f + "/bytes:8")]
                         if r and gbench.parse_name(r).family != f) + ")."]
    if multi:
        notes.append(("The fastest variant" if compact else "[...]: the fastest variant")
                     + " of " + ", ".join(pretty(f) for f in order if f in multi)
                     + " at that size.")
    return Table("throughput", "How fast data moves", header, rows, notes, names)


def table_roundtrip(run) -> Table | None:
    fams = {f: v for f, v in _families(run).items()
            if _has_counter(run, [nm for _, nm in v], "p50_ns")}
    if not fams:
        return None
    order = _family_order(fams)
    columns = []  # (label, {bytes or None: name})
    for f in order:
        variants: dict = {}
        for n, nm in fams[f]:
            rest = tuple((k, a) for k, a in n.args if k != "bytes")
            variants.setdefault(rest, {})[n.arg("bytes")] = nm
        for rest, by in sorted(variants.items(), key=lambda kv: gbench.natural_key(str(kv[0]))):
            label = pretty(f) + (f" ({variant_text(rest)})" if rest else "")
            if set(by) == {None}:
                label += " (no payload)"
            columns.append((label, by))
    sizes = sorted({b for _, by in columns for b in by if b is not None}, key=float)
    header = ["message"] + [c[0] for c in columns]
    rows, names = [], set()

    def cell(nm):
        names.add(nm)
        p50, p99 = run.median(nm, "p50_ns"), run.median(nm, "p99_ns")
        if p50 is None:
            return sig((run.median(nm) or 0) / 1e3) if run.median(nm) else DASH
        return f"{sig(p50 / 1e3)} / {sig(p99 / 1e3) if p99 else DASH}"

    for size in sizes or [None]:
        row = [_size_label(size) if size else "(any)"]
        for _, by in columns:
            nm = by.get(size) or by.get(None)
            row.append(cell(nm) if nm else "")
        rows.append(row)
    notes = ["Round trip in µs: median (p50) / 99th percentile (p99) of the "
             "per-round-trip samples, each the median over the repetitions. "
             "\"no payload\": the raw wake-up, the same at every size."]
    return Table("roundtrip", "Round trips", header, rows, notes, names)


def _pool_groups(run):
    """{(workload, items): {family: {workers: {chunksize: name}}}} and
    {(workload, items): serial name}."""
    groups: dict = {}
    serial: dict = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.prefix != "BM_":
            continue
        wl, items = n.arg(0), n.arg("items")
        if wl is None or items is None:
            continue
        if n.family == SERIAL:
            serial[(wl, items)] = name
        elif n.arg("chunksize") is not None and n.arg("workers") is not None:
            try:
                w = int(n.arg("workers"))
            except ValueError:
                continue
            (groups.setdefault((wl, items), {}).setdefault(n.family, {})
             .setdefault(w, {})[n.arg("chunksize")]) = name
    key = lambda kv: (kv[0][0], float(kv[0][1]))  # noqa: E731
    return dict(sorted(groups.items(), key=key)), serial


def _chunk_key(c):
    try:
        return (0, float(c))
    except ValueError:
        return (1, 0.0)


def _map_order(families):
    return sorted(families, key=lambda f: (MAP_FAMILIES.index(f)
                                           if f in MAP_FAMILIES else 99, f))


def tables_pool_cost(run) -> list[Table]:
    groups, serial = _pool_groups(run)
    out = []
    for (wl, items), fams in groups.items():
        s_name = serial.get((wl, items))
        s_t = med(run, s_name) if s_name else None
        n_items = float(items)
        W = pick_workers(run, {w for f in fams.values() for w in f})
        order = _map_order(fams)
        chunks = sorted({c for f in fams.values() for c in f.get(W, {})}, key=_chunk_key)
        header = ["chunksize", "serial"] + [pretty(f) for f in order]
        rows, names = [], set()
        if s_name:
            names.add(s_name)
        for c in chunks:
            row = [c, fmt_ns(s_t / n_items) if s_t else DASH]
            for f in order:
                nm = fams[f].get(W, {}).get(c)
                t = med(run, nm) if nm else None
                if t is None:
                    row.append("")
                    continue
                names.add(nm)
                per = t / n_items
                cell = fmt_ns(per)
                be = break_even(per, s_t / n_items if s_t else None, W)
                if be is not None:
                    cell += f" (c* {fmt_ns(be)})"
                row.append(cell)
            rows.append(row)
        notes = [f"Time per item (median map time / {int(n_items):,} items) "
                 f"with {W} worker{'s' if W != 1 else ''}. c*: the break-even "
                 f"item cost, c* = o·W/(W−1) with per-item overhead o = pool "
                 f"time per item − serial time per item / W: with work split "
                 f"over W workers and o paid on top, the pool beats the "
                 f"plain loop once an item costs more than c*."]
        names.update(nm for f in fams.values() for by in f.values() for nm in by.values())
        if len({w for f in fams.values() for w in f}) > 1:
            notes.append(f"Other worker counts: chart pool_{wl}_items{items} "
                         f"and the run file.")
        out.append(Table(f"pool_cost_{wl}_{items}",
                         f"Pool cost per item: {wl}, {int(n_items):,} items",
                         header, rows, notes, names))
    return out


def _default_or_best(run, by_chunk):
    if "default" in by_chunk and med(run, by_chunk["default"]):
        return "default", by_chunk["default"]
    best = [(med(run, nm), c, nm) for c, nm in by_chunk.items() if med(run, nm)]
    if not best:
        return None, None
    _, c, nm = min(best)
    return c, nm


def tables_pool_speedup(run) -> list[Table]:
    groups, serial = _pool_groups(run)
    if not groups:
        return []
    all_fams = _map_order({f for fams in groups.values() for f in fams})
    all_w = {w for fams in groups.values() for f in fams.values() for w in f}
    W = pick_workers(run, all_w)
    header = ["workload", "items", "serial"] + [
        f"{pretty(f)} (W={W})" for f in all_fams]
    rows, names = [], set()
    for (wl, items), fams in groups.items():
        s_name = serial.get((wl, items))
        s_t = med(run, s_name) if s_name else None
        if s_name:
            names.add(s_name)
        row = [wl, f"{int(float(items)):,}", fmt_ns(s_t)]
        for f in all_fams:
            c, nm = _default_or_best(run, fams.get(f, {}).get(W, {}))
            t = med(run, nm) if nm else None
            if t is None:
                row.append("")
                continue
            names.add(nm)
            cell = fmt_ns(t)
            if s_t:
                cell += f" ({fmt_ratio(s_t / t)})"
            if c != "default":
                cell += f" [chunksize {c}]"
            row.append(cell)
        rows.append(row)
    first = Table("pool_speedup", "When a pool pays", header, rows,
                  [f"Median time to map all items; (×): speedup over the "
                   f"serial loop of the same workload; W={W} workers, the "
                   f"default chunksize (else the best one, named)."], names)
    # speedup against workers
    ws = sorted(all_w)
    header = ["workload", "items", "mechanism"] + [f"W={w}" for w in ws]
    rows2, names2 = [], set()
    for (wl, items), fams in groups.items():
        s_name = serial.get((wl, items))
        s_t = med(run, s_name) if s_name else None
        if not s_t:
            continue
        for f in _map_order(fams):
            row = [wl, f"{int(float(items)):,}", pretty(f)]
            for w in ws:
                c, nm = _default_or_best(run, fams[f].get(w, {}))
                t = med(run, nm) if nm else None
                if t:
                    names2.add(nm)
                row.append(fmt_ratio(s_t / t) if t else "")
            rows2.append(row)
    second = Table("pool_workers", "Speedup against worker count", header, rows2,
                   ["Serial time over map time, default chunksize (else the "
                    "best one) at each worker count."
                    + (f" This machine has {cores(run)} cores." if cores(run) else "")],
                   names2)
    return [first] + ([second] if rows2 else [])


def table_python(run) -> Table | None:
    if not any(gbench.parse_name(n).prefix == "Py" for n in run.names()):
        return None
    import side_by_side
    try:
        rows = side_by_side.pair([run])
    except gbench.InputError:
        return None
    header, body = side_by_side.table(rows)
    names = set()
    for r in rows:
        for s in (r.py, r.cpp):
            if s is not None:
                names.add(s.name)
    return Table("python", "CPython side by side", header, body,
                 [side_by_side.FOOTNOTE], names)


def table_other(run, shown: set[str]) -> Table | None:
    rest = [n for n in run.names() if n not in shown]
    if not rest:
        return None
    rows = []
    for nm in rest:
        b = run.get(nm)
        if b.error:
            rows.append([nm, "error: " + b.error, "", ""])
            continue
        counters = [f"{c} {_fmt_counter(run.median(nm, c), c)}" for c in b.counters()
                    if c != "cpu_time" and run.median(nm, c) is not None]
        rows.append([nm, fmt_ns(med(run, nm)), str(len(run.samples(nm)) or DASH),
                     "; ".join(counters)])
    return Table("other", "Other benchmarks", ["benchmark", "median time", "n",
                                               "counters (median)"], rows,
                 ["Every benchmark of the run that no table above shows."],
                 set(rest))


def _fmt_counter(v, c):
    if c == "bytes_per_second":
        return f"{sig(v / 1e9)} GB/s"
    if c.endswith("_ns"):
        return fmt_ns(v)
    if c.endswith("_per_second"):
        return gbench.format_value(v, c)
    return sig(v)


def table_counters(run, shown: set[str]) -> Table | None:
    """Counters no table shows (page faults and the like), for every
    benchmark that has them."""
    rows = []
    for nm in sorted(shown, key=gbench.natural_key):
        b = run.get(nm)
        if b is None:
            continue
        # the round trips' percentiles are drawn (latency_cdf), not listed
        extra = [c for c in b.counters() if c != "cpu_time" and c not in KNOWN_COUNTERS
                 and not plot.CDF_COUNTER.fullmatch(c)]
        vals = [f"{c} {_fmt_counter(run.median(nm, c), c)}" for c in extra
                if run.median(nm, c) is not None]
        if vals:
            rows.append([nm, "; ".join(vals)])
    if not rows:
        return None
    return Table("counters", "More counters", ["benchmark", "counters (median)"],
                 rows, ["Counters of the benchmarks above that their tables do "
                        "not show."], set())


def build_tables(run) -> list[Table]:
    tables: list[Table] = []
    for t in (table_process(run), table_throughput(run), table_roundtrip(run)):
        if t:
            tables.append(t)
    tables += tables_pool_speedup(run)
    tables += tables_pool_cost(run)
    py = table_python(run)
    if py:
        tables.append(py)
    shown = set().union(*(t.names for t in tables)) if tables else set()
    other = table_other(run, shown)
    counters = table_counters(run, shown)
    for t in (counters, other):
        if t:
            tables.append(t)
    for t in tables:
        t.commands = commands_for(run, t.names)
    return tables


# --- commands and machine ----------------------------------------------------

def _family_settings(run) -> dict[str, dict]:
    return {f["family"]: f for f in run.mpbench.get("families", [])
            if isinstance(f, dict) and f.get("family")}


def suite_command(run) -> str:
    m = run.mpbench
    if isinstance(m.get("command"), str):
        return m["command"]
    cmd = ["scripts/bench"]
    if m.get("quick"):
        cmd.append("--quick")
    fams = [f.get("family") for f in m.get("families", []) if isinstance(f, dict)]
    if fams and m.get("python_reference", {}).get("status") != "ran":
        cmd.append("--no-python")
    if fams and m.get("filter") is None and len(fams) == 1:
        cmd.append(f"--families {fams[0]}")
    return " ".join(cmd)


def commands_for(run, names: set[str]) -> list[str]:
    """The commands that measure `names` again, one per bench family: the
    family binary with the repetitions and times of the run and a filter
    for exactly the families of `names`."""
    family_of = getattr(run, "family_of", None) or _recorded_families(run)
    settings = _family_settings(run)
    by_target: dict[str, set[str]] = {}
    for nm in names:
        by_target.setdefault(family_of.get(nm, "?"), set()).add(
            gbench.parse_name(nm).family)
    out = []
    for target in sorted(by_target):
        fams = sorted(by_target[target])
        if target == "python_reference":
            quick = run.mpbench.get("quick")
            out.append("bazel run //scripts:python_reference -- --out py.json"
                       + (" --quick" if quick else ""))
            continue
        s = settings.get(target, {})
        args = [f"bazel run //bench:{target} --",
                "--benchmark_filter=" + shlex.quote(f"^BM_({'|'.join(fams)})(/|$)")]
        if s.get("repetitions"):
            args.append(f"--benchmark_repetitions={s['repetitions']}")
        if s.get("min_time") is not None:
            args.append(f"--benchmark_min_time={s['min_time']:g}")
        if run.mpbench.get("random_interleaving", True):
            args.append("--benchmark_enable_random_interleaving=true")
        out.append(" ".join(args))
    return out


MACHINE_KEYS = (
    ("cpu_model", "CPU"), ("cores", "cores"), ("machine_class", "machine class"),
    ("caches", "caches"), ("memory", "memory"), ("kernel", "kernel"),
    ("os", "OS"), ("virtualization", "virtualisation"), ("governor", "governor"),
    ("compiler_version", "compiler"), ("compilation_mode", "compilation mode"),
    ("flags", "flags"), ("benchmark_library", "Google Benchmark"),
    ("python", "Python"),
)


def machine_rows(run) -> list[list[str]]:
    m = run.mpbench
    rows = []
    for key, label in MACHINE_KEYS:
        v = m.get(key)
        if v is None and key == "cores":
            v = run.context.get("num_cpus")
        if v not in (None, ""):
            rows.append([label, str(v)])
    commit = m.get("commit_short") or m.get("commit")
    if commit:
        rows.append(["commit", str(commit)[:10] + (" (uncommitted changes)" if m.get("dirty") else "")])
    when = m.get("started_utc") or run.context.get("date")
    if when:
        rows.append(["started", str(when)])
    if m.get("seconds") is not None:
        rows.append(["duration", f"{float(m['seconds']) / 60:.1f} min"])
    steps = [f"{f['family']} {float(f['seconds']) / 60:.1f} min"
             for f in m.get("families", [])
             if isinstance(f, dict) and f.get("family") and f.get("seconds") is not None]
    py = m.get("python_reference") or {}
    if py.get("status") == "ran" and py.get("seconds") is not None:
        steps.append(f"python_reference {float(py['seconds']) / 60:.1f} min")
    if steps:
        rows.append(["families", ", ".join(steps)])
    reps = m.get("repetitions")
    if reps:
        rows.append(["repetitions", f"{reps}" + (" (quick run)" if m.get("quick") else "")])
    return rows


# --- rendering ---------------------------------------------------------------

def md_table(header, rows) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(run, tables, charts: list[tuple[str, str]], level: int = 1,
                    chart_dir: str = "charts") -> str:
    h = "#" * level
    out = [f"{h} mpbench report: {run_id(run)}", ""]
    out.append(f"Made by `{suite_command(run)}`; files: "
               + ", ".join(f"`{os.path.basename(p)}`" for p in getattr(run, "report_sources", [run.path]))
               + ".")
    out += ["", f"{h}# Machine", "", md_table(["", ""], machine_rows(run)), ""]
    for t in tables:
        out += [f"{h}# {t.title}", "", md_table(t.header, t.rows), ""]
        out += [" ".join(t.notes), ""] if t.notes else []
        if t.commands:
            out += ["```sh"] + t.commands + ["```", ""]
    if charts:
        out += [f"{h}# Charts", ""]
        out += [f"![{title}]({chart_dir}/{name}.png)\n" for name, title in charts]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}
td:first-child,th:first-child,table.machine td{text-align:left}
th{background:#f2f2f2}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}
figure{margin:1em 0} figure svg{max-width:100%;height:auto}
.note{font-size:13px;color:#444;max-width:60em}
"""


# Counts, once the page has loaded, the charts and tables the browser drew
# with a non-empty size: scripts/check_report.sh compares them with the
# counts declared in the page's <meta> tags.
RENDER_CHECK = """<script>
window.addEventListener("load", function () {
  function drawn(sel) {
    var n = 0;
    document.querySelectorAll(sel).forEach(function (e) {
      var r = e.getBoundingClientRect();
      if (r.width > 0 && r.height > 0) n++;
    });
    return n;
  }
  document.body.setAttribute("data-rendered-charts", drawn("figure.chart svg"));
  document.body.setAttribute("data-rendered-tables", drawn("table"));
});
</script>"""


def html_table(header, rows, cls="") -> str:
    e = html.escape
    out = [f'<table class="{cls}"><thead><tr>'
           + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def inline_svg(svg_text: str, title: str) -> str:
    i = svg_text.find("<svg")
    body = svg_text[i:] if i >= 0 else svg_text
    return f'<figure class="chart"><figcaption>{html.escape(title)}</figcaption>\n{body}</figure>'


def render_html(run, tables, charts: list[tuple[str, str, str]]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>mpbench report {e(run_id(run))}</title>",
             f'<meta name="mpbench-charts" content="{len(charts)}">',
             f'<meta name="mpbench-tables" content="{len(tables) + 1}">',
             f"<style>{CSS}</style></head><body>",
             f"<h1>mpbench report: {e(run_id(run))}</h1>",
             f'<p class="note">Made by <code>{e(suite_command(run))}</code>; files: '
             + ", ".join(f"<code>{e(os.path.basename(p))}</code>"
                         for p in getattr(run, "report_sources", [run.path])) + ".</p>",
             "<h2>Machine</h2>", html_table(["", ""], machine_rows(run), "machine")]
    placed = charts_by_table(tables, [name for name, _, _ in charts])
    by_name = {name: (title, svg) for name, title, svg in charts}
    for t in tables:
        parts.append(f'<h2 id="{e(t.key)}">{e(t.title)}</h2>')
        parts.append(html_table(t.header, t.rows, "data"))
        for n in t.notes:
            parts.append(f'<p class="note">{e(n)}</p>')
        if t.commands:
            parts.append("<pre>" + e("\n".join(t.commands)) + "</pre>")
        for name in placed.get(t.key, []):
            parts.append(inline_svg(by_name[name][1], by_name[name][0]))
    rest = [c for c in charts if c[0] in placed.get(None, [])]
    if rest:
        parts.append("<h2>More charts</h2>")
        for _, title, svg in rest:
            parts.append(inline_svg(svg, title))
    parts.append(RENDER_CHECK)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# Which table a chart belongs under; the rest go at the end (key None).
CHART_PLACES = (
    (r"^fork_rss$", "process"), (r"^throughput$", "throughput"),
    (r"^latency", "roundtrip"), (r"^pool_speedup$", "pool_workers"),
    (r"^pool_break_even$", "pool_speedup"),
)


def charts_by_table(tables, names) -> dict:
    keys = {t.key for t in tables}
    out: dict = {}
    for name in names:
        key = None
        for pattern, k in CHART_PLACES:
            if re.search(pattern, name):
                key = k
        m = re.fullmatch(r"pool_(.+)_items(\d+)", name)
        if m:
            key = f"pool_cost_{m.group(1)}_{m.group(2)}"
        if key not in keys:
            key = None
        out.setdefault(key, []).append(name)
    return out


def run_id(run) -> str:
    return Path(run.path).stem


CHART_TITLES = {
    "throughput": "Throughput against message size",
    "latency": "Round-trip latency",
    "latency_cdf": "Round-trip latency distribution",
    "fork_rss": "Process creation cost against parent RSS",
    "pool_speedup": "Pool speedup against workers",
    "pool_break_even": "Break-even item cost against chunksize",
    "history": "Headline ratios over runs",
}


def make_charts(run, chart_dir: Path, runs_dir: Path | None):
    """(name, title, svg text) of every chart plot.py draws for the run."""
    files, notes = plot.make_charts(run, chart_dir, runs_dir)
    out = []
    for f in sorted(files, key=lambda p: (p.stem not in CHART_TITLES, p.stem)):
        if f.suffix != ".svg":
            continue
        title = CHART_TITLES.get(f.stem) or f.stem.replace("_", " ")
        out.append((f.stem, title, f.read_text(encoding="utf-8")))
    return out, notes


def write_report(run, out_dir: Path, runs_dir: Path | None = None,
                 charts: bool = True) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = build_tables(run)
    chart_list, notes = ([], [])
    if charts:
        chart_list, notes = make_charts(run, out_dir / "charts", runs_dir)
    for n in notes:
        print(f"report: chart: {n}", file=sys.stderr)
    md = render_markdown(run, tables, [(n, t) for n, t, _ in chart_list])
    page = render_html(run, tables, chart_list)
    for name, text in (("REPORT.md", md), ("index.html", page)):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    return out_dir / "index.html"


# --- README block ------------------------------------------------------------

README_TABLES = ("process", "throughput", "roundtrip", "pool_speedup", "pool_cost")


def _cheapest_pool_group(run):
    """(workload, items) of the workload with the cheapest serial item and,
    of it, the most items: where the break-even cost is the question."""
    groups, serial = _pool_groups(run)
    best = []
    for (wl, items) in groups:
        nm = serial.get((wl, items))
        t = med(run, nm) if nm else None
        if t:
            best.append((t / float(items), -float(items), wl, items))
    if not best:
        return None
    _, _, wl, items = min(best)
    return wl, items


def readme_block(run, rel_run: str) -> str:
    """The generated part of README.md: the headline tables of the run."""
    tables = {t.key: t for t in build_tables(run)}
    compact = table_throughput(run, compact=True)
    if compact:
        tables["throughput"] = compact
    cheapest = _cheapest_pool_group(run)
    if cheapest:
        tables["pool_cost"] = tables.get(f"pool_cost_{cheapest[0]}_{cheapest[1]}")
    m = run.mpbench
    when = str(m.get("started_utc") or run.context.get("date") or "")[:10]
    cpu = m.get("cpu_model") or "?"
    out = [f"{README_BEGIN} run={rel_run} -->",
           "<!-- generated by: bazel run //scripts:report -- --update-readme; "
           "do not edit by hand -->",
           "",
           f"Measured by `{suite_command(run)}` on {when}: {cpu}, "
           f"{cores(run) or '?'} cores, {m.get('os', '?')}, "
           f"{m.get('compiler_version', '?')} (`{rel_run}`). Medians of the repetitions; "
           "the whole report of this run, every table and chart, is "
           "[docs/results.md](docs/results.md).",
           ""]
    for key in README_TABLES:
        t = tables.get(key)
        if not t:
            continue
        out += [f"**{t.title}**", "", md_table(t.header, t.rows), ""]
        if t.notes:
            out += [" ".join(t.notes), ""]
    out.append(README_END)
    return "\n".join(out)


def find_block(text: str) -> tuple[int, int, str | None]:
    """(start, end, run path) of the README's block; (-1, -1, None) if
    there is none."""
    i = text.find(README_BEGIN)
    if i < 0:
        return -1, -1, None
    j = text.find(README_END, i)
    if j < 0:
        raise ValueError("README.md has a report:begin marker but no report:end")
    m = re.match(r"<!-- report:begin run=(\S+) -->", text[i:])
    return i, j + len(README_END), (m.group(1) if m else None)


def docs_results(run, rel_run: str) -> str:
    tables = build_tables(run)
    names = ["fork_rss", "throughput", "latency", "pool_speedup",
             "pool_break_even", "history"]
    if plot.has_cdf(run):  # runs made before the round trips' percentiles lack it
        names.insert(3, "latency_cdf")
    charts = [(n, CHART_TITLES.get(n, n.replace("_", " "))) for n in names]
    text = render_markdown(run, tables, charts, level=1,
                           chart_dir="../results/charts")
    return ("<!-- generated by: bazel run //scripts:report -- --update-readme "
            f"(from {rel_run}); do not edit by hand -->\n" + text)


def expected_readme(root: Path, readme_text: str, run_path: str | None = None):
    """(new README text, new docs/results.md text, run path used)."""
    start, end, marked = find_block(readme_text)
    rel = run_path or marked
    if rel is None:
        raise ValueError("README.md has no <!-- report:begin run=... --> block; "
                         "give the run: --update-readme RUN.json")
    p = Path(rel)
    if p.is_absolute():
        try:
            rel = str(p.relative_to(root))
        except ValueError:
            raise ValueError(f"{rel}: the README's run must be inside the "
                             f"repository") from None
    run = gbench.load_run(root / rel)
    block = readme_block(run, rel)
    if start < 0:
        raise ValueError("README.md has no <!-- report:begin ... --> marker "
                         "to replace; add the two marker lines where the "
                         "block goes")
    return readme_text[:start] + block + readme_text[end:], docs_results(run, rel), rel


# --- command line ------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="report", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN.json",
                   help="run files (later ones replace benchmarks of earlier ones)")
    p.add_argument("--out-dir", help="where the report goes (default "
                   "results/reports/<first run's name>)")
    p.add_argument("--runs-dir", help="run files for the history chart "
                   "(default: results/runs of the source tree)")
    p.add_argument("--no-history", action="store_true",
                   help="leave out the history chart")
    p.add_argument("--no-charts", action="store_true",
                   help="tables only (no matplotlib)")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite README.md's generated block and docs/results.md "
                   "from RUN.json (default: the run its marker names)")
    p.add_argument("--check-readme", action="store_true",
                   help="exit 1 when README.md's block or docs/results.md "
                   "differs from what its run generates")
    return p


def readme_main(args, root: Path) -> int:
    readme = root / "README.md"
    docs = root / "docs" / "results.md"
    text = readme.read_text(encoding="utf-8")
    run_arg = None
    if args.runs:
        if len(args.runs) > 1:
            print("report: error: --update-readme takes one run", file=sys.stderr)
            return 2
        run_arg = str(gbench.user_path(args.runs[0]).resolve())
    try:
        new, results, rel = expected_readme(root, text, run_arg)
    except (ValueError, gbench.InputError) as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    old_docs = docs.read_text(encoding="utf-8") if docs.exists() else ""
    if args.check_readme:
        bad = [p for p, a, b in ((readme, text, new), (docs, old_docs, results)) if a != b]
        for p in bad:
            print(f"report: {p.relative_to(root)} differs from what {rel} generates; "
                  f"run: bazel run //scripts:report -- --update-readme", file=sys.stderr)
        return 1 if bad else 0
    docs.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(new, encoding="utf-8")
    docs.write_text(results, encoding="utf-8")
    print(f"report: README.md block and docs/results.md rewritten from {rel} "
          f"(README {len(new.encode())} bytes)", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    root = gbench.repo_root()
    if args.update_readme or args.check_readme:
        return readme_main(args, root)
    if not args.runs:
        print("report: error: give at least one run file", file=sys.stderr)
        return 2
    try:
        runs = [gbench.load_run(gbench.user_path(p)) for p in args.runs]
    except gbench.InputError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    run = combine(runs)
    out_dir = (gbench.user_path(args.out_dir) if args.out_dir
               else root / "results" / "reports" / run_id(run))
    runs_dir = None if args.no_history else (
        gbench.user_path(args.runs_dir) if args.runs_dir else root / "results" / "runs")
    if runs_dir is not None and not runs_dir.is_dir():
        runs_dir = None
    page = write_report(run, out_dir, runs_dir, charts=not args.no_charts)
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
