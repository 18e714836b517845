#!/usr/bin/python3
"""Compares two benchmark runs and gates on regressions.

    bazel run //scripts:compare -- OLD.json NEW.json [--mode=robust]

Benchmarks are matched by name (`/real_time`-style suffixes ignored). Each
row compares the repetitions of one metric: real time ("time") and every
user counter both runs have (`bytes_per_second`, `items_per_second`, higher
is better; `p50_ns`, `p99_ns`, lower is better). The change is the ratio of
medians; its significance is the two-sided Mann-Whitney U test on the
repetitions (as Google Benchmark's tools/compare.py does, scipy's
`mannwhitneyu`). A row REGRESSED when it got worse by more than --threshold
percent AND its p, Holm-corrected over all gated rows, is below --alpha.

The correction matters: a suite tests hundreds of benchmarks at once, and on
a shared machine one of them crosses p < 0.05 by chance in most runs. What
keeps the gate sensitive is the pooled row of each family ("BM_X/* (N
instances)"): every instance's samples divided by the median of its OLD
samples and tested together, so a slowdown of one primitive, which shows in
all its instances, is tested with N times the samples.

Modes:
  direct  compare each benchmark's own numbers (default).
  robust  compare each benchmark of our code as a ratio to its in-run
          reference, declared in scripts/references.py (BM_ProcessStartJoin /
          BM_ForkExitWait, BM_PipeThroughput / BM_RawPipeThroughput,
          BM_PoolMap / BM_SerialMap, ...). Ratio samples pair repetition i of
          the benchmark with repetition i of its reference (or its median
          when the counts differ). Families of our code with no reference are
          compared after dividing by the machine factor. A machine that is
          uniformly slower raises no alarm; our code getting slower does.
          Raw mechanisms and the Python reference (Py*) get no rows here.
          This is the mode CI uses.

Both modes report the machine factor: the median, over all benchmarks in
common, of new/old median time. It tells drift of the whole machine apart
from a change in one primitive.

Rows whose repetitions cannot reach --alpha (with n and m repetitions the
smallest two-sided p the U test can give is 2/C(n+m, n), so 3 against 3
can never reach 0.05) are reported as "too few repetitions for p < alpha"
and the rest of the comparison proceeds: the pooled family rows usually
still test them (N instances x 3 repetitions).

Exit status: 0 nothing regressed; 1 a gated benchmark regressed or failed in
NEW; 2 unusable input (unreadable or malformed file, no benchmark in common,
or nothing at all that could be tested: every gated row underpowered).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import gbench
import references

DEFAULT_THRESHOLD = 5.0  # percent
DEFAULT_ALPHA = 0.05
# With a baseline pooled from several runs, a row's tolerance is this many
# times the largest relative spread of the per-run medians in OLD.
DEFAULT_NOISE_FACTOR = 1.5

# Row verdicts.
REGRESSED = "REGRESSED"
IMPROVED = "improved"
SAME = "same"
NOISY = "noisy"  # beyond the threshold but not significant
WITHIN_NOISE = "within run-to-run noise"  # beyond threshold, inside tolerance
NOT_REPRODUCED = "not reproduced"  # regressed, but not in the --confirm run
TOO_FEW = "too few repetitions for p < alpha"  # the U test cannot reach alpha
FAILED = "FAILED"  # error_occurred in NEW
WAS_FAILED = "failed in old"
INFO = "info"  # direction unknown


@dataclass
class Row:
    name: str
    metric: str
    kind: str  # "direct", "ratio" (to `reference`) or "machine"
    reference: str | None
    old: float | None
    new: float | None
    change: float | None  # new/old - 1
    p: float | None
    n_old: int
    n_new: int
    verdict: str
    gated: bool
    higher_is_better: bool | None = False
    p_adj: float | None = None  # Holm-adjusted over the gated tests
    # smallest |change| in percent that can alarm: the threshold, or more when
    # OLD pools several runs whose medians differ (run-to-run noise)
    tolerance: float | None = None
    # the samples the test used and the OLD run each came from (not part of
    # the JSON output)
    samples_old: list[float] = field(default_factory=list, repr=False)
    samples_new: list[float] = field(default_factory=list, repr=False)
    sources_old: list[int] = field(default_factory=list, repr=False)


@dataclass
class Report:
    mode: str
    threshold: float
    alpha: float
    old: str
    new: str
    rows: list[Row] = field(default_factory=list)
    machine_factor: float | None = None
    machine_factor_n: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # make the exit status 2
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    tests: int = 0  # gated U tests, the m of the Holm correction
    old_sources: int = 1  # runs pooled into OLD
    noise_factor: float = DEFAULT_NOISE_FACTOR
    noise_from: str | None = None  # --noise-from: file and its run count
    confirmed_with: str | None = None  # --confirm: the second NEW run

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        if any(r.gated and r.verdict in (REGRESSED, FAILED) for r in self.rows):
            return 1
        return 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            key = r.verdict
            if not r.gated and key in (REGRESSED, IMPROVED, FAILED):
                key += " (not gated)"
            out[key] = out.get(key, 0) + 1
        return out


class CompareError(Exception):
    """Input that makes the comparison meaningless (exit status 2)."""


@lru_cache(maxsize=None)
def min_p_value(n_old: int, n_new: int) -> float:
    """The smallest two-sided p the U test can give for these sample sizes
    (completely separated samples), computed the way the test is run."""
    if n_old < 1 or n_new < 1:
        return 1.0
    return u_test(tuple(range(n_old)), tuple(range(n_old, n_old + n_new)))


def u_test(a, b) -> float:
    from scipy.stats import mannwhitneyu
    if len(a) < 1 or len(b) < 1:
        return 1.0
    if len(set(a) | set(b)) == 1:
        return 1.0  # all equal: no evidence of anything
    # scipy's "auto" switches to the normal approximation above 8 samples,
    # which overstates p for small separated samples tenfold (9 vs 9 fully
    # separated: 4e-4 instead of the exact 4e-5). Exact wherever it is valid
    # (no ties) and cheap.
    exact = max(len(a), len(b)) <= 50 and len(set(a) | set(b)) == len(a) + len(b)
    p = float(mannwhitneyu(list(a), list(b), alternative="two-sided",
                           method="exact" if exact else "asymptotic").pvalue)
    return 1.0 if math.isnan(p) else p


def run_to_run_spread(samples: list[float], sources: list[int]) -> float:
    """Largest relative difference between the per-run medians of samples
    pooled from several runs (0 for one run)."""
    by: dict[int, list[float]] = {}
    for src, v in zip(sources, samples):
        by.setdefault(src, []).append(v)
    meds = [statistics.median(v) for v in by.values() if v]
    if len(meds) < 2 or min(meds) <= 0:
        return 0.0
    return max(meds) / min(meds) - 1.0


def _verdict(old_s, new_s, higher, threshold, alpha, use_utest, tolerance=None):
    """(change, p, verdict) for two samples of one metric. `tolerance` (in
    percent, at least the threshold) is the change that run-to-run noise
    already explains."""
    old_m, new_m = statistics.median(old_s), statistics.median(new_s)
    if old_m == 0:
        change = None
    else:
        change = new_m / old_m - 1.0
    if higher is None or change is None:
        return change, None, INFO
    worse = (change < 0) if higher else (change > 0)
    beyond = abs(change) * 100.0 > threshold
    p = None
    if use_utest:
        if min(len(old_s), len(new_s)) < 2 or min_p_value(len(old_s), len(new_s)) >= alpha:
            return change, None, TOO_FEW
        p = u_test(old_s, new_s)
    if not beyond:
        return change, p, SAME
    if use_utest and p >= alpha:
        return change, p, NOISY
    if tolerance is not None and abs(change) * 100.0 <= tolerance:
        return change, p, WITHIN_NOISE
    return change, p, REGRESSED if worse else IMPROVED


def machine_factor(old: gbench.Run, new: gbench.Run) -> tuple[float | None, int]:
    """Median over common benchmarks of new/old median time, and how many."""
    ratios = []
    for name in new.names():
        if not old.has(name):
            continue
        a, b = old.median(name), new.median(name)
        if a and b and a > 0:
            ratios.append(b / a)
    if not ratios:
        return None, 0
    return statistics.median(ratios), len(ratios)


def _ratio_samples(run: gbench.Run, name: str, ref: str,
                   metric: str) -> tuple[list[float], list[int]]:
    """Each repetition of the benchmark over the median of its reference in
    the same run (in the same source run, for a baseline pooled from several),
    and the source of each. (Pairing repetition i with repetition i would add
    the reference's noise to every sample: with random interleaving the two
    are not measured at the same moment, so nothing cancels.)"""
    s_by = run.samples_by_source(name, metric)
    r_by = run.samples_by_source(ref, metric)
    r_all = run.samples(ref, metric)
    if not s_by or not r_all:
        return [], []
    overall = statistics.median(r_all)
    values, sources = [], []
    for src, s in s_by.items():
        m = statistics.median(r_by[src]) if r_by.get(src) else overall
        if m > 0:
            values += [v / m for v in s]
            sources += [src] * len(s)
    return values, sources


def _family_rows(rows: list[Row], threshold: float, alpha: float,
                 noise_factor: float = DEFAULT_NOISE_FACTOR) -> list[Row]:
    """Rows that pool every instance of one family (e.g. all rss_mib:N of
    BM_ProcessStartJoin) against one reference family: each instance's
    samples are divided by the median of its OLD samples, then pooled. A
    slowdown of one primitive shows in every instance, so the pooled test
    sees it with many more samples than any single instance."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        # An instance with one repetition a side says nothing about its own
        # spread (its OLD sample divided by its OLD median is exactly 1).
        if r.kind == "family" or len(r.samples_old) < 2 or len(r.samples_new) < 2:
            continue
        n = gbench.parse_name(r.name)
        ref_family = (gbench.parse_name(r.reference).family if r.reference
                      else r.kind)
        groups.setdefault((n.prefix + n.family, ref_family, r.metric, r.kind), []).append(r)
    out = []
    for (family, ref_family, metric, kind), members in groups.items():
        if len(members) < 2:
            continue
        old_s, new_s, src = [], [], []
        for r in members:
            m = statistics.median(r.samples_old)
            if m <= 0:
                continue
            old_s += [v / m for v in r.samples_old]
            new_s += [v / m for v in r.samples_new]
            src += r.sources_old or [0] * len(r.samples_old)
        if not old_s:
            # Every instance's OLD median is 0 (a counter such as
            # minor_faults that stayed at zero): no ratio to pool.
            continue
        higher = members[0].higher_is_better
        tol = max(threshold, noise_factor * 100 * run_to_run_spread(old_s, src))
        change, p, verdict = _verdict(old_s, new_s, higher, threshold, alpha, True, tol)
        out.append(Row(f"{family}/* ({len(members)} instances)", metric, "family",
                       members[0].reference if kind == "ratio" else
                       ("machine" if kind == "machine" else None),
                       statistics.median(old_s), statistics.median(new_s), change, p,
                       len(old_s), len(new_s), verdict, members[0].gated, higher,
                       tolerance=tol))
    return out


def _fingerprint_warnings(old: gbench.Run, new: gbench.Run) -> list[str]:
    out = []
    fo, fn = old.fingerprint(), new.fingerprint()
    for label, run in (("OLD", old), ("NEW", new)):
        if not run.mpbench.get("fingerprint"):
            out.append(f"{label} ({run.path}) has no machine fingerprint (not "
                       f"written by the suite runner): only its core count and "
                       f"caches can be checked")
    if not (old.mpbench.get("fingerprint") and new.mpbench.get("fingerprint")):
        fo = {"cores": old.context.get("num_cpus")}
        fn = {"cores": new.context.get("num_cpus")}
    diffs = [k for k in sorted(set(fo) | set(fn)) if fo.get(k) != fn.get(k)]
    if diffs:
        lines = [f"MACHINE FINGERPRINTS DIFFER: these runs were made on "
                 f"different machines or builds; absolute numbers are not "
                 f"comparable (use --mode=robust, or an A/B run):"]
        for k in diffs:
            lines.append(f"    {k}: {fo.get(k)!r} -> {fn.get(k)!r}")
        out.append("\n".join(lines))
    for label, run in (("OLD", old), ("NEW", new)):
        cores = run.context.get("num_cpus") or run.mpbench.get("cores") or 1
        # Google Benchmark's load_avg, taken as the first family started
        # (later loads include the benchmarks' own processes)
        load = (run.context.get("load_avg") or [0])[0]
        if isinstance(load, (int, float)) and load > 0.5 * cores:
            out.append(f"the machine was busy when {label} started (1-minute "
                       f"load {load:.2f} on {cores} CPUs): other work competes "
                       f"with the benchmarks' processes, and changes may be that "
                       f"work")
    mo, mn = old.mpbench, new.mpbench
    if mo and mn and bool(mo.get("quick")) != bool(mn.get("quick")):
        out.append(f"one run is --quick and the other is not (old quick="
                   f"{bool(mo.get('quick'))}, new quick={bool(mn.get('quick'))})"
                   f": short runs can differ systematically")
    if mo and mn and mo.get("suite_version") != mn.get("suite_version"):
        out.append(f"suite versions differ ({mo.get('suite_version')} -> "
                   f"{mn.get('suite_version')}): benchmarks may have changed "
                   f"meaning")
    for label, m in (("old", mo), ("new", mn)):
        if m.get("inject_slowdown"):
            out.append(f"the {label} run was built with a deliberate slowdown "
                       f"({m['inject_slowdown']})")
    return out


def _holm(rows: list[Row], alpha: float, correct: bool = True) -> int:
    """Holm-Bonferroni over the gated rows that have a p-value: sets p_adj
    (the Holm-adjusted p, or p itself when `correct` is False) and turns a
    REGRESSED or improved row whose p_adj is not below alpha into NOISY.
    Returns the number of tests m. Many benchmarks are tested at once; without
    the correction one of them would cross p < 0.05 by chance in most runs."""
    tested = sorted((r for r in rows if r.gated and r.p is not None), key=lambda r: r.p)
    m = len(tested)
    running = 0.0
    for i, r in enumerate(tested):
        running = max(running, min(1.0, (m - i) * r.p)) if correct else r.p
        r.p_adj = running
    for r in rows:
        if r.p_adj is None:
            r.p_adj = r.p
        if r.verdict in (REGRESSED, IMPROVED) and r.p_adj is not None and r.p_adj >= alpha:
            r.verdict = NOISY
    return m


def compare_runs(old: gbench.Run, new: gbench.Run, mode: str = "direct",
                 threshold: float = DEFAULT_THRESHOLD,
                 alpha: float = DEFAULT_ALPHA, use_utest: bool = True,
                 metrics: list[str] | None = None,
                 allow_underpowered: bool = False, pooled: bool = True,
                 correct: bool = True,
                 noise_factor: float = DEFAULT_NOISE_FACTOR,
                 noise: gbench.Run | None = None,
                 name_filter: str | None = None,
                 ours_only: bool = False) -> Report:
    """Builds the comparison; raises CompareError for runs with nothing in
    common. `noise`, a baseline pooled from several runs (--noise-from),
    supplies each row's run-to-run tolerance when OLD is a single run.
    `name_filter` (a regex searched in each name) limits the benchmarks;
    `ours_only` gates, in direct mode, only our own code (references.is_gated:
    what an A/B of two builds can change), reporting the rest."""
    rep = Report(mode=mode, threshold=threshold, alpha=alpha, old=old.path,
                 new=new.path)
    pattern = re.compile(name_filter) if name_filter else None

    def wanted_name(n: str) -> bool:
        return pattern is None or pattern.search(n) is not None

    common = [n for n in new.names() if old.has(n) and wanted_name(n)]
    rep.only_old = [n for n in old.names() if not new.has(n) and wanted_name(n)]
    rep.only_new = [n for n in new.names() if not old.has(n) and wanted_name(n)]
    if not common and pattern is not None:
        raise CompareError(f"no benchmark in common matches --filter {name_filter!r}")
    if not common:
        raise CompareError(
            f"no benchmark in common between {old.path} ({len(old.names())} "
            f"benchmarks, e.g. {old.names()[0]}) and {new.path} "
            f"({len(new.names())}, e.g. {new.names()[0]})")
    rep.warnings += _fingerprint_warnings(old, new)
    rep.machine_factor, rep.machine_factor_n = machine_factor(old, new)
    rep.old_sources = old.sources
    rep.noise_factor = noise_factor

    def add(name, metric, kind, ref, old_s, new_s, gated, old_med=None, new_med=None,
            old_src=None):
        gated = gated and metric not in references.UNGATED_METRICS
        higher = gbench.higher_is_better(metric)
        if kind == "ratio":
            higher = False if metric in gbench.TIME_METRICS or metric.endswith("_ns") else higher
        if not old_s or not new_s:
            row = Row(name, metric, kind, ref, old_med, new_med, None, None,
                      len(old_s), len(new_s), TOO_FEW if use_utest else INFO,
                      gated, higher)
            if old_med and new_med:
                row.change = new_med / old_med - 1
                if not use_utest:
                    row.verdict = _verdict([old_med], [new_med], higher,
                                           threshold, alpha, False)[2]
            rep.rows.append(row)
            return
        old_src = list(old_src) if old_src else [0] * len(old_s)
        tol = max(threshold, noise_factor * 100 * run_to_run_spread(old_s, old_src))
        change, p, verdict = _verdict(old_s, new_s, higher, threshold, alpha,
                                      use_utest, tol)
        rep.rows.append(Row(name, metric, kind, ref, statistics.median(old_s),
                            statistics.median(new_s), change, p, len(old_s),
                            len(new_s), verdict, gated, higher, tolerance=tol,
                            samples_old=list(old_s), samples_new=list(new_s),
                            sources_old=old_src))

    for name in common:
        bo, bn = old.get(name), new.get(name)
        if bn.error or bo.error:
            gated = (references.is_gated(name) if mode == "robust" or ours_only else
                     gbench.parse_name(name).prefix in references.GATED_PREFIXES)
            rep.rows.append(Row(name, "time", "direct", None, old.median(name),
                                new.median(name), None, None,
                                len(old.samples(name)), len(new.samples(name)),
                                FAILED if bn.error else WAS_FAILED, gated))
            if bn.error:
                rep.warnings.append(f"{name} failed in NEW: {bn.error}")
            continue
        if mode == "direct":
            gated = (references.is_gated(name) if ours_only else
                     gbench.parse_name(name).prefix in references.GATED_PREFIXES)
            wanted = metrics or (["time"] + [c for c in bn.counters()
                                             if c in bo.counters()])
            for metric in wanted:
                if metric not in bn.metrics() or metric not in bo.metrics():
                    continue
                add(name, metric, "direct", None, old.samples(name, metric),
                    new.samples(name, metric), gated,
                    old.median(name, metric), new.median(name, metric),
                    old.get(name).source)
            continue
        # robust: only our benchmarks (BM_); the Python reference measures
        # CPython, not us
        if gbench.parse_name(name).prefix not in references.GATED_PREFIXES:
            continue
        refs = references.references(name)
        gated = references.is_gated(name)
        if refs:
            for _, ref in refs:
                if not (old.has(ref) and new.has(ref)):
                    continue
                if old.error(ref) or new.error(ref):
                    rep.warnings.append(f"{name}: reference {ref} failed; "
                                        f"ratio not compared")
                    continue
                wanted = metrics or (["time"] + [
                    c for c in references.RATIO_COUNTERS
                    if all(c in b.metrics() for b in
                           (bo, bn, old.get(ref), new.get(ref)))])
                for metric in wanted:
                    os_, osrc = _ratio_samples(old, name, ref, metric)
                    ns_, _ = _ratio_samples(new, name, ref, metric)
                    om = (old.median(name, metric) or 0) / (old.median(ref, metric) or math.inf)
                    nm = (new.median(name, metric) or 0) / (new.median(ref, metric) or math.inf)
                    add(name, metric, "ratio", ref, os_, ns_, gated,
                        om or None, nm or None, osrc)
            if gated and not any(r.name == name for r in rep.rows):
                rep.warnings.append(f"{name}: none of its references "
                                    f"({', '.join(r for _, r in refs)}) is in "
                                    f"both runs; not gated")
        elif references.is_machine_normalised(name) and rep.machine_factor:
            f = rep.machine_factor
            nm = new.median(name)
            add(name, "time", "machine", None, old.samples(name),
                [v / f for v in new.samples(name)], gated, old.median(name),
                nm / f if nm else None, old.get(name).source)

    if use_utest and pooled:
        fam = _family_rows(rep.rows, threshold, alpha, noise_factor)
        # each family row goes after the last instance row of its family
        for f in fam:
            prefix_family = f.name.split("/", 1)[0]
            last = max(i for i, r in enumerate(rep.rows)
                       if r.name.split("/", 1)[0] == prefix_family and r.metric == f.metric
                       and r.kind != "family")
            rep.rows.insert(last + 1, f)
    if noise is not None:
        if noise.sources < 2:
            raise CompareError(
                f"--noise-from {noise.path} holds a single run: it says "
                f"nothing about run-to-run noise (make it with `bazel run "
                f"//scripts:baseline -- RUN1 RUN2 RUN3`)")
        # The noise baseline against itself: each row's tolerance from the
        # spread between its pooled runs, under the same settings.
        _apply_noise(rep, noise, compare_runs(
            noise, noise, mode, threshold, alpha, use_utest, metrics, True,
            pooled, correct, noise_factor, name_filter=name_filter,
            ours_only=ours_only))
    if use_utest:
        rep.tests = _holm(rep.rows, alpha, correct)

    gated_few = [r for r in rep.rows if r.gated and r.verdict == TOO_FEW]
    if gated_few and use_utest:
        r = gated_few[0]
        need = _needed_repetitions(alpha)
        msg = (f"{len(gated_few)} gated comparison(s) have too few repetitions "
               f"for the U test to reach p < {alpha}: e.g. {r.name} ({r.metric}) "
               f"has {r.n_old} in OLD and {r.n_new} in NEW")
        if r.n_old >= 1 and r.n_new >= 1:
            msg += (f"; the smallest p possible is "
                    f"{min_p_value(max(r.n_old, 1), max(r.n_new, 1)):.3g}")
        tested = [x for x in rep.rows if x.gated and x.p is not None]
        if tested:
            rep.warnings.append(
                msg + f"; they are reported as \"{TOO_FEW}\", and the "
                f"{len(tested)} gated rows that could be tested were (pooled "
                f"family rows among them). --benchmark_repetitions={need} or "
                f"more on both sides tests every row")
        elif allow_underpowered:
            rep.warnings.append(msg + ". Nothing gated could be tested "
                                "[--allow-underpowered: not an error]")
        else:
            rep.errors.append(msg + f". Nothing gated could be tested, so "
                              f"this gate could never fail. Rerun with "
                              f"--benchmark_repetitions={need} or more (both runs)")
    if mode == "robust" and not any(r.gated for r in rep.rows):
        rep.warnings.append("no gated benchmark of our code with its reference "
                            "in both runs: the robust gate checked nothing")
    return rep


def _row_key(row: Row) -> tuple:
    """What identifies a row across runs of different extent: family rows by
    family and reference family (their instance count may differ)."""
    if row.kind == "family":
        ref = gbench.parse_name(row.reference).family if row.reference else None
        return (row.name.split(" (", 1)[0], row.metric, row.kind, ref)
    return (row.name, row.metric, row.kind, row.reference)


def _apply_noise(rep: Report, noise: gbench.Run, self_rep: Report) -> None:
    """Raises each row's tolerance to the run-to-run spread the same row
    shows between the runs pooled in `noise` (times the noise factor), and
    turns a REGRESSED or improved row inside it into WITHIN_NOISE.

    Repetitions of one run do not see what changes between runs (the host's
    placement of the VM's cores, a neighbour's load): two single runs of the
    same build can differ by more than their repetitions' spread, and the U
    test then calls noise significant. A baseline pooled from several runs
    on the machine class measured that run-to-run spread once; `self_rep`
    is that baseline compared with itself."""
    tolerance = {_row_key(r): r.tolerance for r in self_rep.rows
                 if r.tolerance is not None}
    rep.noise_from = f"{noise.path} ({noise.sources} runs)"
    for r in rep.rows:
        tol = tolerance.get(_row_key(r))
        if tol is None:
            continue
        r.tolerance = max(r.tolerance or threshold, tol)
        if (r.verdict in (REGRESSED, IMPROVED) and r.change is not None
                and abs(r.change) * 100.0 <= r.tolerance):
            r.verdict = WITHIN_NOISE


def confirm(rep: Report, second: Report) -> None:
    """Keeps as REGRESSED only the rows that also regressed in `second`, the
    same comparison with a second NEW run made independently: a regression
    of our code shows in every run, while a neighbour's burst of load or a
    change of the host's core placement rarely hits the same rows twice."""
    # Ungated rows too: a reported (not gated) regression that shows again
    # stays reported as such.
    again = {_row_key(r) for r in second.rows if r.verdict == REGRESSED}
    rep.confirmed_with = second.new
    for r in rep.rows:
        if r.verdict == REGRESSED and _row_key(r) not in again:
            r.verdict = NOT_REPRODUCED


def _needed_repetitions(alpha: float) -> int:
    for n in range(2, 50):
        if min_p_value(n, n) < alpha:
            return n
    return 50


# -- output -------------------------------------------------------------

def _fmt_value(row: Row, v: float | None) -> str:
    if v is None:
        return "-"
    if row.kind in ("ratio", "family"):
        return f"{v:.4g}"
    return gbench.format_value(v, row.metric)


def _fmt_change(c: float | None) -> str:
    return "-" if c is None else f"{c * 100:+.1f}%"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3f}"


def _metric_label(row: Row) -> str:
    if row.kind == "family":
        if not row.reference:
            return f"{row.metric}, pooled"
        return f"{row.metric} / {gbench.parse_name(row.reference).family}, pooled"
    if row.kind == "ratio":
        return f"{row.metric} / {gbench.parse_name(row.reference).family}"
    if row.kind == "machine":
        return f"{row.metric} / machine"
    return row.metric


def _verdict_label(row: Row) -> str:
    return row.verdict if row.gated else f"{row.verdict} (not gated)"


def _summary(rep: Report) -> list[str]:
    lines = [f"mode: {rep.mode}; threshold {rep.threshold:g}%, alpha {rep.alpha:g} "
             f"(two-sided Mann-Whitney U on repetitions; p is Holm-adjusted "
             f"over the {rep.tests} gated tests)"]
    if rep.old_sources > 1:
        lines.append(f"OLD pools {rep.old_sources} runs: a row alarms only beyond "
                     f"{rep.noise_factor:g} x the spread of its per-run medians in "
                     f"OLD (when that exceeds the threshold)")
    if rep.confirmed_with:
        lines.append(f"confirmed with {rep.confirmed_with}: a row counts as "
                     f"REGRESSED only if it regressed in that run too")
    if rep.noise_from:
        lines.append(f"run-to-run noise from {rep.noise_from}: a row alarms "
                     f"only beyond {rep.noise_factor:g} x the spread of its "
                     f"per-run medians there")
    if rep.machine_factor is not None:
        pct = (rep.machine_factor - 1) * 100
        looks = (f"{abs(pct):.1f}% {'slower' if pct > 0 else 'faster'}"
                 if abs(pct) >= 0.05 else "unchanged")
        lines.append(f"machine factor: {rep.machine_factor:.3f} (median new/old "
                     f"time over {rep.machine_factor_n} benchmarks: the whole "
                     f"machine looks {looks})")
        if rep.mode == "direct" and abs(pct) > rep.threshold:
            lines.append("  the whole machine moved more than the threshold: "
                         "--mode=robust tells our code apart from the machine")
    counts = rep.counts()
    lines.append("verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    if rep.only_old:
        lines.append(f"only in OLD ({len(rep.only_old)}): "
                     + ", ".join(rep.only_old[:5]) + (" ..." if len(rep.only_old) > 5 else ""))
    if rep.only_new:
        lines.append(f"only in NEW ({len(rep.only_new)}): "
                     + ", ".join(rep.only_new[:5]) + (" ..." if len(rep.only_new) > 5 else ""))
    regressed = [r for r in rep.rows if r.gated and r.verdict in (REGRESSED, FAILED)]
    if rep.errors:
        lines.append("RESULT: UNUSABLE INPUT (exit 2)")
    elif regressed:
        shown = ", ".join(f"{r.name} [{_metric_label(r)}] {_fmt_change(r.change)}"
                          for r in regressed[:10])
        more = f" and {len(regressed) - 10} more" if len(regressed) > 10 else ""
        lines.append(f"RESULT: {len(regressed)} REGRESSION(S): {shown}{more}")
    else:
        lines.append("RESULT: no regression")
    return lines


SIGNIFICANT = (REGRESSED, IMPROVED, FAILED)

# GitHub refuses a pull-request comment over 65,536 characters; the markdown
# stays under this whatever the size of the runs.
MARKDOWN_LIMIT = 60_000


def _is_change(row: Row) -> bool:
    """A significant change: regressed, improved (gated or not) or failed."""
    return row.verdict in SIGNIFICANT


def _by_size(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: -abs(r.change or 0.0))


def format_text(rep: Report, all_rows: bool = True) -> str:
    """The table; with all_rows False only the significant changes."""
    out = [f"OLD: {rep.old}", f"NEW: {rep.new}"]
    for w in rep.warnings:
        out.append("WARNING: " + w)
    header = ("benchmark", "metric", "old", "new", "change", "p", "verdict")
    rows = [header] + [
        (r.name, _metric_label(r), _fmt_value(r, r.old), _fmt_value(r, r.new),
         _fmt_change(r.change), _fmt_p(r.p_adj), _verdict_label(r))
        for r in rep.rows if all_rows or _is_change(r)]
    if len(rows) == 1:
        out.append("(no significant change)" if not all_rows else "(no rows)")
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for i, row in enumerate(rows):
            out.append("  ".join(c.ljust(w) if j < 2 or j == 6 else c.rjust(w)
                                 for j, (c, w) in enumerate(zip(row, widths))).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
    out += _summary(rep)
    for e in rep.errors:
        out.append("ERROR: " + e)
    return "\n".join(out)


def _md_row(r: Row) -> str:
    v = _verdict_label(r)
    if r.gated and r.verdict in (REGRESSED, FAILED):
        v = f"**{v}**"
    return (f"| `{r.name}` | {_metric_label(r)} | {_fmt_value(r, r.old)} | "
            f"{_fmt_value(r, r.new)} | {_fmt_change(r.change)} | "
            f"{_fmt_p(r.p_adj)} | {v} |")


_MD_HEADER = ["| benchmark | metric | old | new | change | p | verdict |",
              "|---|---|---:|---:|---:|---:|---|"]


def format_markdown(rep: Report, changes_only: bool = False,
                    limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment of at most `limit` characters: the summary,
    regressions sorted by size, improvements sorted by size, then every
    other row in a collapsed table (left out with changes_only). Rows that
    do not fit are left out with a count, regressions last of all."""
    regressed = [r for r in rep.rows if r.gated and r.verdict in (REGRESSED, FAILED)]
    title = ("### :x: Benchmark regression" if regressed else
             "### :warning: Benchmark comparison unusable" if rep.errors else
             "### :white_check_mark: No benchmark regression")
    head = [title, ""] + [f"- {line}" for line in _summary(rep)]
    for w in rep.warnings[:20]:
        w = w if len(w) <= 600 else w[:600] + " ..."
        head.append(f"- **warning:** {w}".replace("\n", "<br>"))
    if len(rep.warnings) > 20:
        head.append(f"- ... and {len(rep.warnings) - 20} more warnings")
    for e in rep.errors:
        head.append(f"- **error:** {e}")
    other_changes = [r for r in rep.rows if _is_change(r) and r not in regressed]
    improved = _by_size([r for r in other_changes if r.verdict == IMPROVED])
    other_changes = _by_size([r for r in other_changes if r.verdict != IMPROVED])
    rest = [] if changes_only else [r for r in rep.rows if not _is_change(r)]
    sections = [
        ("#### Regressions", _by_size(regressed), False),
        ("#### Improvements", improved, False),
        ("#### Other significant changes (not gated)", other_changes, False),
        (f"all other comparisons", rest, True),
    ]
    # Budget: the header, then each section's rows while they fit; a final
    # line per section says how many were left out.
    footer_room = 400
    used = len("\n".join(head)) + footer_room
    body: list[str] = []
    for title_s, rows, collapsed in sections:
        if not rows:
            continue
        start = ([f"", f"<details><summary>{title_s} ({len(rows)})</summary>", ""]
                 if collapsed else ["", f"{title_s} ({len(rows)})", ""])
        start += _MD_HEADER
        end = ["", "</details>"] if collapsed else []
        cost = len("\n".join(start + end)) + 2
        if used + cost > limit:
            body.append(f"\n_{len(rows)} rows of '{title_s}' left out: over "
                        f"{limit} characters (see the text or --format json output)_")
            continue
        lines = list(start)
        shown = 0
        for r in rows:
            line = _md_row(r)
            if used + cost + len(line) + 1 > limit:
                break
            lines.append(line)
            cost += len(line) + 1
            shown += 1
        if shown < len(rows):
            lines.append(f"\n_{len(rows) - shown} more rows left out: over "
                         f"{limit} characters (see the text or --format json output)_")
        body += lines + end
        used += cost
    if changes_only and not (regressed or improved or other_changes):
        body += ["", "_no significant change_"]
    text = "\n".join(head + body)
    return text if len(text) <= limit else text[:limit - 20] + "\n_(cut)_"


def format_json(rep: Report) -> str:
    d = asdict(rep)
    for r in d["rows"]:
        r.pop("samples_old", None)
        r.pop("samples_new", None)
        r.pop("sources_old", None)
    d["exit_code"] = rep.exit_code
    d["counts"] = rep.counts()
    return json.dumps(d, indent=2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compare", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", help="reference run file (Google Benchmark JSON), "
                   "e.g. results/baselines/x86_64-2cpu.json")
    p.add_argument("new", help="run file to judge, e.g. results/runs/X.json")
    p.add_argument("--mode", choices=("direct", "robust"), default="direct",
                   help="direct: each benchmark's own numbers; robust: ratios "
                   "to the in-run references of scripts/references.py (CI). "
                   "Default: direct")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   metavar="PCT", help="smallest change, in percent, that can "
                   f"count as a regression (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="U-test significance level: a change beyond the "
                   f"threshold counts only when p < alpha (default {DEFAULT_ALPHA:g})")
    p.add_argument("--no-utest", action="store_true",
                   help="judge on the threshold alone (medians), for runs "
                   "without repetitions; nothing is then significant, so use "
                   "it to look, not to gate")
    p.add_argument("--no-pooled", action="store_true",
                   help="leave out the pooled row of each family (all its "
                   "instances tested together)")
    p.add_argument("--no-correction", action="store_true",
                   help="judge each row at --alpha on its own instead of "
                   "Holm-correcting over all gated rows (more alarms, and more "
                   "false ones)")
    p.add_argument("--noise-factor", type=float, default=DEFAULT_NOISE_FACTOR,
                   metavar="K", help="when OLD is a baseline pooled from several "
                   "runs, a row alarms only if its change also exceeds K times "
                   "the largest spread between those runs' medians "
                   f"(default {DEFAULT_NOISE_FACTOR:g})")
    p.add_argument("--noise-from", metavar="BASELINE",
                   help="a baseline pooled from several runs of this machine "
                   "class (e.g. results/baselines/x86_64-2cpu.json): each row "
                   "alarms only beyond --noise-factor times the spread of its "
                   "per-run medians there. Use it to compare two single runs: "
                   "their repetitions do not show what changes from one run "
                   "to the next")
    p.add_argument("--confirm", metavar="NEW2",
                   help="a second run of the same build as NEW: a row counts "
                   "as REGRESSED only when it regressed against OLD in both "
                   "(CI measures again after an alarm)")
    p.add_argument("--allow-underpowered", action="store_true",
                   help="report, instead of failing with status 2, gated "
                   "benchmarks whose repetitions cannot reach alpha")
    p.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                   help="compare only this metric (time, cpu_time or a counter "
                   "name); repeatable. Default: time and every counter both "
                   "runs have (robust mode: time, p50_ns, p99_ns)")
    p.add_argument("--format", choices=("text", "markdown", "json"),
                   default="text", help="text table (default), markdown for a "
                   "pull-request comment, or json for tools")
    p.add_argument("--changes-only", action="store_true",
                   help="show only significant changes (regressed, improved, "
                   "failed: beyond the threshold with Holm-adjusted p < alpha), "
                   "in the text and markdown formats")
    p.add_argument("--filter", metavar="REGEX",
                   help="compare only the benchmarks whose name matches REGEX "
                   "(searched anywhere in the name, e.g. '^BM_Pipe')")
    p.add_argument("--output", metavar="FILE",
                   help="also write the report (in --format) to FILE")
    return p


def run_cli(args) -> int:
    try:
        old = gbench.load_run(gbench.user_path(args.old))
        new = gbench.load_run(gbench.user_path(args.new))
        noise = (gbench.load_run(gbench.user_path(args.noise_from))
                 if args.noise_from else None)

        def judge(run: gbench.Run) -> Report:
            return compare_runs(old, run, args.mode, args.threshold,
                                args.alpha, not args.no_utest, args.metrics,
                                args.allow_underpowered, not args.no_pooled,
                                not args.no_correction, args.noise_factor,
                                noise, name_filter=args.filter)

        rep = judge(new)
        if args.confirm:
            confirm(rep, judge(gbench.load_run(gbench.user_path(args.confirm))))
    except re.error as e:
        print(f"compare: error: --filter: {e}", file=sys.stderr)
        return 2
    except (gbench.InputError, CompareError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    if args.format == "markdown":
        text = format_markdown(rep, changes_only=args.changes_only)
    elif args.format == "json":
        text = format_json(rep)
    else:
        text = format_text(rep, all_rows=not args.changes_only)
    print(text)
    if args.output:
        out = gbench.user_path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    if rep.errors:
        for e in rep.errors:
            print(f"compare: error: {e}", file=sys.stderr)
    return rep.exit_code


def main(argv=None) -> int:
    return run_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
