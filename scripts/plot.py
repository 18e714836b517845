#!/usr/bin/python3
"""Charts of one run (and of the stored history), SVG and PNG.

    bazel run //scripts:plot -- RUN.json [--out-dir results/charts]

Writes into results/charts/ (each chart as NAME.svg and NAME.png):
  throughput      bytes per second (GB/s, 10^9 B/s) against message size,
                  every mechanism, with the memcpy and raw-pipe lines
  latency         round trip against message size: median (p50) and p99
  latency_cdf     distribution of the round trips (CDF from the cdf_p*_ns
                  percentiles), one panel per message size, a line per
                  mechanism
  fork_rss        process creation cost against the parent's resident memory
                  for fork, vfork, posix_spawn and mp::Process
  pool_<workload>_items<N>
                  map time against chunksize, one line per worker count,
                  serial as a horizontal line, one panel per mechanism
  pool_speedup    speedup over serial against workers (best chunksize); the
                  ideal line stops rising at the machine's core count
  pool_break_even break-even item cost c* against chunksize, a line per
                  mechanism (c* = o W / (W - 1), o the pool's per-item
                  overhead; see scripts/report.py), W = the machine's cores
  history         headline ratios (our code / raw reference) over the runs in
                  results/runs/, full and quick runs in separate panels (see
                  scripts/history.py)
Every line is the median over repetitions, with a band from the smallest
to the largest repetition; the history's points are geometric means over a
family of median ratios, their error bar the same mean of the smallest and
the largest ratio the repetitions give (history.headline_spread). A mechanism
has one colour in every chart (MECHANISM_COLOURS); raw references are black and grey; the Python
reference (Py* benchmarks) is dashed in the colour of its C++ sibling.
A chart whose benchmarks the run lacks is skipped with a note.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path

import gbench

KIB, MIB, GIB = 2**10, 2**20, 2**30
GB = 1e9
PY_STYLE = dict(linestyle="--", alpha=0.85)
BAND_ALPHA = 0.15
ERRORBAR_ALPHA = 0.7  # the history's error bars (its points are not lines)
REF_STYLES = {  # raw references, drawn the same way everywhere
    "MemcpyThroughput": dict(color="black", linewidth=2.2),
    "RawPipeThroughput": dict(color="0.45", linewidth=2.2),
    "RawPipePingPong": dict(color="0.45", linewidth=2.2),
    "RawFutexPingPong": dict(color="black", linewidth=1.5, linestyle=":"),
    "RawSpinPingPong": dict(color="0.3", linewidth=1.5, linestyle="-."),
    "ForkExitWait": dict(color="black", linewidth=2.2),
    "SerialMap": dict(color="black", linewidth=1.8),
}
PRETTY = {
    "MemcpyThroughput": "memcpy", "RawPipeThroughput": "raw pipe",
    "MemcpySlotsThroughput": "memcpy into slots in turn",
    "PipeThroughput": "mp pipe", "QueueThroughput": "Queue",
    "JoinableQueueThroughput": "JoinableQueue",
    "ChannelThroughput": "Channel", "RingChannelThroughput": "RingChannel",
    "BoostMqThroughput": "Boost message_queue",
    "RawPipePingPong": "raw pipe", "RawFutexPingPong": "raw futex",
    "RawSpinPingPong": "raw spin", "PipePingPong": "mp pipe",
    "QueuePingPong": "Queue", "ChannelPingPong": "Channel",
    "BoostMqPingPong": "Boost message_queue",
    "RawPipeGrownThroughput": "raw pipe, grown buffer",
    "RawPipeFramedThroughput": "raw pipe, grown, length-prefixed",
    "RawPipeGrownPingPong": "raw pipe, grown buffer",
    "RawRingThroughput": "raw ring", "RawRingPingPong": "raw ring",
    "SpscRingThroughput": "SpscRing", "SpscRingPingPong": "SpscRing",
    "SpscRingLoanThroughput": "SpscRing loan",
    "QueueMpmcThroughput": "Queue, 2 producers 2 consumers",
    "RingChannelLoanThroughput": "RingChannel loan",
    "ForkExitWait": "fork + _exit + waitpid", "Vfork": "vfork",
    "PosixSpawn": "posix_spawn (/bin/true)", "ProcessStartJoin": "mp::Process start+join",
    "PoolMap": "Pool.map", "PoolImapUnordered": "Pool.imap_unordered",
    "ForkMap": "fork per chunk", "ThreadPoolMap": "thread pool",
    "PoolMapInto": "Pool.map_into", "RawRingPoolMap": "raw ring pool",
}
# What the Python reference's benchmark of a family is, where the C++ label
# would be wrong for it (CPython has no mp::Process).
PY_PRETTY = {
    "ForkExitWait": "Python os.fork + os._exit + os.waitpid",
    "ProcessStartJoin": "Python multiprocessing.Process start+join",
    "PipeThroughput": "Python multiprocessing.Pipe",
    "PipePingPong": "Python multiprocessing.Pipe",
    "RawPipeThroughput": "Python os.pipe",
    "RawPipePingPong": "Python os.pipe",
    "QueueThroughput": "Python multiprocessing.Queue",
    "QueuePingPong": "Python multiprocessing.Queue",
    "JoinableQueueThroughput": "Python multiprocessing.JoinableQueue",
    "PoolMap": "Python Pool.map", "PoolImapUnordered": "Python Pool.imap_unordered",
    "SerialMap": "Python serial",
}
# One colour per mechanism in every chart: a family's mechanism is its name
# without the Throughput/PingPong suffix. Raw references use REF_STYLES.
MECHANISM_COLOURS = {
    "Pipe": "#1f77b4", "Queue": "#ff7f0e", "JoinableQueue": "#8c564b",
    "Channel": "#2ca02c", "RingChannel": "#d62728", "BoostMq": "#9467bd",
    "FloatChannel": "#98df8a",
    "ProcessStartJoin": "#17becf", "Vfork": "#bcbd22", "PosixSpawn": "#e377c2",
    "ForkExec": "#aec7e8", "ThreadStartJoin": "#ffbb78",
    "PoolMap": "#393b79", "PoolImapUnordered": "#637939", "ForkMap": "#8c6d31",
    "ThreadPoolMap": "#843c39",
}
# Mechanisms not listed above (new benchmarks) get one of these, chosen by
# a hash of the name: stable from run to run.
SPARE_COLOURS = ("#c49c94", "#f7b6d2", "#c5b0d5", "#9edae5", "#dbdb8d", "#ff9896",
                 "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b", "#ce6dbd", "#3182bd")


def mechanism(family: str) -> str:
    return re.sub(r"(Throughput|PingPong)$", "", family)


def colour_of(family: str):
    if family in REF_STYLES:
        return REF_STYLES[family]["color"]
    mech = mechanism(family)
    if mech in MECHANISM_COLOURS:
        return MECHANISM_COLOURS[mech]
    h = int(hashlib.sha1(mech.encode()).hexdigest(), 16)
    return SPARE_COLOURS[h % len(SPARE_COLOURS)]


def _plt():
    if not os.environ.get("MPLCONFIGDIR"):
        cfg = Path.home() / ".config" / "matplotlib"
        if not os.access(cfg if cfg.exists() else cfg.parent if cfg.parent.exists()
                         else Path.home(), os.W_OK):
            os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mpl-")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "mpbench", "figure.dpi": 100,
                         "axes.grid": True, "grid.alpha": 0.3,
                         "legend.fontsize": "small"})
    return plt


def size_label(n: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale and n % scale == 0:
            return f"{int(n // scale)} {unit}"
    return f"{int(n)} B"


def _mech_label(n: gbench.Name, skip=("bytes",)) -> str:
    if n.prefix == "Py" and n.family in PY_PRETTY:
        base = PY_PRETTY[n.family]
    else:
        base = PRETTY.get(n.family, n.family)
        if n.prefix == "Py":
            base = "Python " + base
    extra = []
    for k, v in n.args:
        if k in skip:
            continue
        if k == "spin_us":
            extra.append(f"spin {v} µs")
        elif k == "slots":
            extra.append(f"{v} slots")
        elif k:
            extra.append(f"{k} {v}")
        else:
            extra.append(v)
    return base + (f" ({', '.join(extra)})" if extra else "")


def _style(n: gbench.Name, variant: int = 0) -> dict:
    """Line style of a benchmark: its mechanism's colour (references their
    own), dashed for Python; `variant` (ring size, spin) picks a marker."""
    if n.family in REF_STYLES:
        st = dict(REF_STYLES[n.family])
    else:
        st = dict(color=colour_of(n.family), linewidth=1.5)
    if n.prefix == "Py":
        st.update(PY_STYLE)
    st.setdefault("marker", "osD^v<>ph*"[variant % 10])
    st["markersize"] = 3.5
    return st


def _stats(run, name, metric="time", value=None):
    """(median, min, max) of a benchmark's repetitions through `value`
    (a function of one sample), or None."""
    f = value or (lambda v: v)
    med = run.median(name, metric)
    if med is None:
        return None
    samples = run.samples(name, metric) or [med]
    vals = sorted(f(v) for v in samples)
    return f(med), vals[0], vals[-1]


def _series(run: gbench.Run, families, xkey: str, stats):
    """{(prefix, family, other args, kind): [(x, (med, lo, hi))]} for
    benchmarks of the given families; `stats(name)` gives the point."""
    out: dict[tuple, list] = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.family not in families or n.prefix not in ("BM_", "Py"):
            continue
        x = n.arg(xkey)
        st = stats(name)
        if st is None:
            continue
        rest = tuple((k, a) for k, a in n.args if k != xkey)
        if x is None:
            out.setdefault((n.prefix, n.family, rest, "flat"), []).append((None, st))
            continue
        try:
            xv = float(x)
        except ValueError:
            continue
        out.setdefault((n.prefix, n.family, rest, "x"), []).append((xv, st))
    return {k: sorted(v, key=lambda p: (p[0] is None, p[0] or 0)) for k, v in out.items()}


def _line(ax, xs, pts, label, st):
    """A median line with its min-max band."""
    meds = [p[0] for p in pts]
    ax.plot(xs, meds, label=label, **st)
    ax.fill_between(xs, [p[1] for p in pts], [p[2] for p in pts],
                    color=st.get("color"), alpha=BAND_ALPHA, linewidth=0)


def _hline(ax, pt, label, st):
    st = {k: v for k, v in st.items() if k not in ("marker", "markersize")}
    ax.axhline(pt[0], label=label, **st)
    ax.axhspan(pt[1], pt[2], color=st.get("color"), alpha=BAND_ALPHA / 2, linewidth=0)


def _subtitle(run: gbench.Run) -> str:
    m = run.mpbench
    bits = [run.label()]
    if m.get("machine_class"):
        bits.append(m["machine_class"])
    if m.get("cpu_model"):
        bits.append(str(m["cpu_model"]))
    if m.get("quick"):
        bits.append("quick run")
    return " · ".join(bits)


def _size_axis(ax, xs):
    ax.set_xscale("log", base=2)
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([size_label(t) for t in ticks], rotation=30, ha="right")
    ax.minorticks_off()


def _save(plt, fig, out_dir: Path, name: str, written: list[Path]):
    for ext in ("svg", "png"):
        p = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.tmp.{ext}"
        meta = {"Date": None} if ext == "svg" else {"Software": None}
        fig.savefig(tmp, format=ext, bbox_inches="tight", metadata=meta,
                    dpi=110 if ext == "png" else None)
        os.replace(tmp, p)
        written.append(p)
    plt.close(fig)


def _legend_outside(ax):
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


SPREAD_NOTE = "lines: median of the repetitions; bands: min to max"


def _order(families):
    return lambda item: (families.index(item[0][1]) if item[0][1] in families else 99,
                         item[0][1], item[0][0] != "BM_", item[0][2])


def _throughput_families(run) -> list[str]:
    """Every family with a bytes:N argument and a bytes_per_second counter
    (or a name ending in Throughput), references first."""
    fams = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.arg("bytes") is None or run.median(name, "p50_ns") is not None:
            continue
        if n.family.endswith("Throughput") or run.median(name, "bytes_per_second"):
            fams[n.family] = True
    return sorted(fams, key=lambda f: (f not in REF_STYLES, f))


def _pingpong_families(run) -> list[str]:
    fams = {gbench.parse_name(nm).family for nm in run.names()
            if run.median(nm, "p50_ns") is not None
            or gbench.parse_name(nm).family.endswith("PingPong")}
    return sorted(fams, key=lambda f: (f not in REF_STYLES, f))


def chart_throughput(plt, run, out_dir, written, notes):
    def stats(name):
        if run.median(name, "bytes_per_second") is not None:
            return _stats(run, name, "bytes_per_second", lambda v: v / GB)
        b = gbench.parse_name(name).arg("bytes")
        try:
            nbytes = float(b)
        except (TypeError, ValueError):
            return None
        st = _stats(run, name, "time", lambda t: nbytes / t if t else 0.0)
        return None if st is None else (st[0], min(st[1:]), max(st[1:]))

    families = _throughput_families(run)
    series = _series(run, families, "bytes", stats)
    series = {k: v for k, v in series.items() if k[3] == "x"}
    if not series:
        notes.append("throughput: no *Throughput/bytes:N benchmarks")
        return

    def spin(rest) -> float:
        for k, v in rest:
            if k == "spin_us":
                try:
                    return float(v)
                except ValueError:
                    return 0.0
        return 0.0

    spinning = any(spin(k[2]) > 0 for k in series)
    panels = [("block only (spin_us:0) and mechanisms without a spin option",
               lambda k: spin(k[2]) == 0)]
    if spinning:
        panels.append(("spinning before blocking (spin_us > 0)",
                       lambda k: spin(k[2]) > 0 or k[1] in REF_STYLES))
    variants: dict = {}
    fig, axes = plt.subplots(1, len(panels), figsize=(7.2 * len(panels) + 3, 5.8),
                             sharey=True, squeeze=False)
    for ax, (title, keep) in zip(axes[0], panels):
        xs = []
        for (prefix, fam, rest, kind), pts in sorted(series.items(), key=_order(families)):
            if not keep((prefix, fam, rest, kind)):
                continue
            n = gbench.Name(prefix, fam, rest)
            other = tuple(a for a in rest if a[0] != "spin_us")
            v = variants.setdefault(fam, {}).setdefault(other, len(variants.get(fam, {})))
            _line(ax, [p[0] for p in pts], [p[1] for p in pts], _mech_label(n),
                  _style(n, v))
            xs += [p[0] for p in pts]
        _size_axis(ax, xs)
        ax.set_yscale("log")
        ax.set_xlabel("message size")
        ax.set_title(title, fontsize="medium")
        ax.legend(loc="lower right", fontsize="x-small")
    axes[0][0].set_ylabel("throughput (GB/s = 10⁹ bytes/s)")
    fig.suptitle("Throughput against message size (one producer, one consumer process)\n"
                 + _subtitle(run) + " · " + SPREAD_NOTE, fontsize="medium")
    fig.tight_layout()
    _save(plt, fig, out_dir, "throughput", written)


def chart_latency(plt, run, out_dir, written, notes):
    panels = (("p50_ns", "median (p50)"), ("p99_ns", "99th percentile (p99)"))
    families = _pingpong_families(run)
    data = {}
    for metric, _ in panels:
        def stats(name, metric=metric):
            if run.median(name, metric) is None and metric == "p50_ns":
                return _stats(run, name, "time", lambda v: v / 1e3)
            return _stats(run, name, metric, lambda v: v / 1e3)
        data[metric] = _series(run, families, "bytes", stats)
    if not any(data.values()):
        notes.append("latency: no *PingPong benchmarks")
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, (metric, title) in zip(axes, panels):
        xs = [p[0] for pts in data[metric].values() for p in pts if p[0] is not None]
        variants: dict = {}
        for (prefix, fam, rest, kind), pts in sorted(data[metric].items(),
                                                      key=_order(families)):
            n = gbench.Name(prefix, fam, rest)
            v = variants.setdefault(fam, {}).setdefault(rest, len(variants.get(fam, {})))
            st = _style(n, v)
            if kind == "flat":
                st.setdefault("linestyle", ":")
                _hline(ax, pts[0][1], _mech_label(n) + " (no payload)", st)
            else:
                if v and "linestyle" not in st:
                    st["linestyle"] = (0, (4, 1.5))  # the spinning variant
                _line(ax, [p[0] for p in pts], [p[1] for p in pts], _mech_label(n), st)
        if xs:
            _size_axis(ax, xs)
        ax.set_yscale("log")
        ax.set_xlabel("message size")
        ax.set_title(f"round trip, {title}", fontsize="medium")
        ax.legend(loc="upper left", fontsize="x-small")
    axes[0].set_ylabel("round-trip time (µs)")
    fig.suptitle("Round-trip latency per mechanism (ping-pong between two processes)\n"
                 + _subtitle(run) + " · " + SPREAD_NOTE + " of each percentile",
                 fontsize="medium")
    _save(plt, fig, out_dir, "latency", written)


CDF_COUNTER = re.compile(r"cdf_p([0-9.]+)_ns")


def cdf_counters(run, name) -> list[tuple[float, str]]:
    """[(fraction, counter)] of a round-trip row's distribution counters
    (cdf_p<P>_ns, written by bench/ipc.cc's run_ping_pong), by fraction."""
    b = run.get(name)
    if b is None or b.error:
        return []
    out = []
    for c in b.counters():
        m = CDF_COUNTER.fullmatch(c)
        if m:
            out.append((float(m.group(1)) / 100, c))
    return sorted(out)


def cdf_points(run, name) -> list[tuple[float, float, float, float]]:
    """[(fraction, median ns, min ns, max ns)]: each percentile's median
    over the repetitions and its smallest and largest repetition."""
    out = []
    for frac, c in cdf_counters(run, name):
        st = _stats(run, name, c)
        if st is not None:
            out.append((frac, *st))
    return out


def has_cdf(run) -> bool:
    return any(cdf_counters(run, nm) for nm in run.names())


def chart_latency_cdf(plt, run, out_dir, written, notes):
    """One panel per message size: the distribution of the round trips of
    every mechanism (fraction of round trips at most x against x), the line
    through each percentile's median, the band from its smallest to its
    largest repetition. Rows without a size (raw futex, raw spin) are
    drawn in every panel as the floor."""
    rows = [nm for nm in run.names() if cdf_counters(run, nm)]
    if not rows:
        notes.append("latency_cdf: no round-trip row has cdf_p*_ns counters "
                     "(runs made before bench/ipc.cc recorded them)")
        return
    families = _pingpong_families(run)
    sized: dict[float, list] = {}
    flat = []
    for nm in rows:
        n = gbench.parse_name(nm)
        b = n.arg("bytes")
        if b is None:
            flat.append(n)
            continue
        try:
            sized.setdefault(float(b), []).append(n)
        except ValueError:
            continue
    sizes = sorted(sized) or [None]
    fig, grid = _grid(plt, len(sizes), w=5.2, h=4.2)
    axes = list(grid.flat)
    handles: dict[str, object] = {}

    def order(n):
        return (families.index(n.family) if n.family in families else 99,
                n.family, n.prefix != "BM_", n.args)

    for ax, size in zip(axes, sizes):
        variants: dict = {}
        for n in sorted(flat + sized.get(size, []), key=order):
            pts = cdf_points(run, n.full)
            if not pts:
                continue
            rest = tuple(a for a in n.args if a[0] != "bytes")
            v = variants.setdefault(n.family, {}).setdefault(
                rest, len(variants.get(n.family, {})))
            st = _style(n, v)
            st.pop("marker", None)
            st.pop("markersize", None)
            if n.arg("bytes") is None:
                st.setdefault("linestyle", ":")
            elif v and "linestyle" not in st:
                st["linestyle"] = (0, (4, 1.5))  # the spinning variant
            label = _mech_label(n) + (" (no payload)" if n.arg("bytes") is None else "")
            ys = [p[0] for p in pts]
            # Straight lines between the measured percentiles: the samples
            # between two of them are not recorded.
            line, = ax.plot([p[1] / 1e3 for p in pts], ys, label=label, **st)
            ax.fill_betweenx(ys, [p[2] / 1e3 for p in pts], [p[3] / 1e3 for p in pts],
                             color=st.get("color"), alpha=BAND_ALPHA, linewidth=0)
            handles.setdefault(label, line)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("round-trip time (µs)")
        ax.set_ylabel("fraction of round trips ≤ x")
        ax.set_title("no payload" if size is None else f"message {size_label(size)}",
                     fontsize="medium")
    for ax in axes[len(sizes):]:
        ax.set_visible(False)
    # One legend for every panel: a mechanism missing from the last panel
    # is still named.
    fig.legend(list(handles.values()), list(handles), loc="center left",
               bbox_to_anchor=(1.0, 0.5), fontsize="x-small")
    fig.suptitle("Round-trip latency distribution per message size (CDF of the "
                 "round trips; percentiles from bench/ipc.cc)\n" + _subtitle(run)
                 + " · lines: median of the repetitions of each percentile; "
                 "bands: min to max", fontsize="medium")
    fig.tight_layout()
    _save(plt, fig, out_dir, "latency_cdf", written)


FORK = ("ForkExitWait", "Vfork", "PosixSpawn", "ProcessStartJoin")
POOL = ("PoolMap", "PoolImapUnordered", "ForkMap", "ThreadPoolMap")


def chart_fork(plt, run, out_dir, written, notes):
    fams = sorted({gbench.parse_name(nm).family for nm in run.names()
                   if gbench.parse_name(nm).arg("rss_mib") is not None},
                  key=lambda f: (FORK.index(f) if f in FORK else 99, f))
    series = _series(run, fams, "rss_mib", lambda nm: _stats(run, nm, "time", lambda v: v / 1e3))
    series = {k: v for k, v in series.items() if k[3] == "x"}
    if not series:
        notes.append("fork_rss: no */rss_mib:N benchmarks")
        return
    fig, ax = plt.subplots(figsize=(9, 5.5))
    xs = []
    for (prefix, fam, rest, _), pts in sorted(series.items(), key=_order(fams)):
        n = gbench.Name(prefix, fam, rest)
        _line(ax, [p[0] for p in pts], [p[1] for p in pts],
              _mech_label(n, ("rss_mib",)), _style(n))
        xs += [p[0] for p in pts]
    ax.set_xscale("symlog", linthresh=1)
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("parent's resident memory (MiB, written 4 KiB pages)")
    ax.set_ylabel("create + reap one child (µs)")
    ax.set_title("Process creation cost against parent RSS\n" + _subtitle(run)
                 + "\n" + SPREAD_NOTE, fontsize="medium")
    _legend_outside(ax)
    _save(plt, fig, out_dir, "fork_rss", written)


def _chunk_pos(c: str) -> float:
    try:
        return float(c)
    except ValueError:
        return float("inf")


def cores(run) -> int | None:
    c = run.mpbench.get("cores") or run.context.get("num_cpus")
    return c if isinstance(c, int) and c > 0 else None


def pick_workers(run, available) -> int:
    """The worker count tables and the break-even chart use: the machine's
    cores when measured, else the largest below, else the smallest."""
    ws = sorted(available)
    c = cores(run)
    if c in ws:
        return c
    below = [w for w in ws if c and w <= c]
    return below[-1] if below else ws[0]


def break_even(pool_ns_per_item, serial_ns_per_item, workers):
    """Break-even item cost c* = o * W / (W - 1), o = pool time per item -
    serial time per item / W: with the work split over W workers and o paid
    on top, the pool beats the plain loop once an item costs more than c*.
    None for one worker (a pool of one never wins by splitting work)."""
    if workers <= 1 or pool_ns_per_item is None or serial_ns_per_item is None:
        return None
    o = pool_ns_per_item - serial_ns_per_item / workers
    return max(o, 0.0) * workers / (workers - 1)


def _shade(colour, i: int, n: int):
    """The i-th of n shades of a colour, lightest first (fewest workers)."""
    import matplotlib.colors as mc
    r, g, b = mc.to_rgb(colour)
    t = 0.55 * (1 - (i + 1) / n)  # 0 for the last: the colour itself
    return (r + (1 - r) * t, g + (1 - g) * t, b + (1 - b) * t)


def _pool_data(run):
    # groups[(workload, items)][(prefix, mech)][workers][chunk] = name
    groups: dict = {}
    serial: dict = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.prefix not in ("BM_", "Py"):
            continue
        wl, items = n.arg(0), n.arg("items")
        if run.median(name) is None or wl is None or items is None:
            continue
        if n.family == "SerialMap":
            serial[(wl, items, n.prefix)] = name
        elif n.arg("chunksize") and n.arg("workers"):
            try:
                w = int(n.arg("workers"))
            except ValueError:
                continue
            g = groups.setdefault((wl, items), {}).setdefault((n.prefix, n.family), {})
            g.setdefault(w, {})[n.arg("chunksize")] = name
    return groups, serial


def _mech_order(m):
    return POOL.index(m) if m in POOL else len(POOL)


def chart_pool(plt, run, out_dir, written, notes):
    groups, serial = _pool_data(run)
    if not groups:
        notes.append("pool: no BM_PoolMap-style benchmarks")
        return
    ms = lambda nm: _stats(run, nm, "time", lambda v: v / 1e6)  # noqa: E731
    speed_panels = []
    for (wl, items), mechs in sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
        mech_names = sorted({m for _, m in mechs}, key=lambda m: (_mech_order(m), m))
        fig, axes = plt.subplots(1, len(mech_names), figsize=(4.6 * len(mech_names), 5.2),
                                 sharey=True, squeeze=False)
        chunks_all = sorted({c for d in mechs.values() for w in d.values() for c in w},
                            key=_chunk_pos)
        pos = {c: i for i, c in enumerate(chunks_all)}
        for ax, mech in zip(axes[0], mech_names):
            ws_all = sorted({w for p in ("BM_", "Py") for w in mechs.get((p, mech), {})})
            for prefix in ("BM_", "Py"):
                per_w = mechs.get((prefix, mech))
                if per_w:
                    for w in sorted(per_w):
                        pts = sorted(per_w[w].items(), key=lambda kv: _chunk_pos(kv[0]))
                        st = dict(color=_shade(colour_of(mech), ws_all.index(w), len(ws_all)),
                                  marker="o", markersize=3.5)
                        if prefix == "Py":
                            st.update(PY_STYLE)
                        label = (f"{'Python, ' if prefix == 'Py' else ''}"
                                 f"{w} worker{'s' if w != 1 else ''}")
                        _line(ax, [pos[c] for c, _ in pts], [ms(nm) for _, nm in pts],
                              label, st)
                s = serial.get((wl, items, prefix))
                if s and (per_w or prefix == "BM_"):
                    _hline(ax, ms(s), "Python serial" if prefix == "Py" else "serial",
                           dict(color="black", linewidth=1.8,
                                linestyle="--" if prefix == "Py" else "-"))
            ax.set_xticks(range(len(chunks_all)))
            ax.set_xticklabels(chunks_all)
            ax.set_yscale("log")
            ax.set_xlabel("chunksize")
            ax.set_title(PRETTY.get(mech, mech), fontsize="medium")
            ax.legend(loc="best", fontsize="x-small")
        axes[0][0].set_ylabel("time to map all items (ms)")
        fig.suptitle(f"Map time against chunksize: workload {wl}, {items} items\n"
                     + _subtitle(run) + " · " + SPREAD_NOTE, fontsize="medium")
        fig.tight_layout()
        _save(plt, fig, out_dir, f"pool_{wl}_items{items}", written)
        speed_panels.append((wl, items, mechs))
    _chart_speedup(plt, run, speed_panels, serial, out_dir, written)
    _chart_break_even(plt, run, groups, serial, out_dir, written, notes)


def _grid(plt, n, w=4.4, h=3.9):
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def _chart_speedup(plt, run, panels, serial, out_dir, written):
    fig, axes = _grid(plt, len(panels))
    ncores = cores(run)
    for ax, (wl, items, mechs) in zip(axes.flat, panels):
        maxw = 1
        for (prefix, mech), per_w in sorted(mechs.items(),
                                            key=lambda kv: (_mech_order(kv[0][1]), kv[0][0])):
            s_name = serial.get((wl, items, prefix))
            s = run.median(s_name) if s_name else None
            if not s:
                continue
            ws = sorted(per_w)
            maxw = max(maxw, ws[-1])
            pts = []
            for w in ws:
                best = min(per_w[w].values(), key=lambda nm: run.median(nm))
                st = _stats(run, best, "time", lambda t: s / t if t else 0.0)
                pts.append((st[0], min(st[1:]), max(st[1:])))
            n = gbench.Name(prefix, mech, ())
            _line(ax, ws, pts, _mech_label(n), _style(n))
        wx = [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= maxw]
        ideal = [min(w, ncores) if ncores else w for w in wx]
        ax.plot(wx, ideal, color="0.6", linestyle=":",
                label=f"ideal (min(workers, {ncores} cores))" if ncores else "ideal")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(wx)
        ax.set_xticklabels([str(w) for w in wx])
        ax.minorticks_off()
        ax.set_xlabel("workers")
        ax.set_ylabel("speedup over serial")
        ax.set_title(f"{wl}, {items} items", fontsize="medium")
        ax.legend(loc="best", fontsize="x-small")
    fig.suptitle("Speedup against workers (best chunksize for each worker count)\n"
                 + _subtitle(run) + " · " + SPREAD_NOTE, fontsize="medium")
    fig.tight_layout()
    _save(plt, fig, out_dir, "pool_speedup", written)


def _chart_break_even(plt, run, groups, serial, out_dir, written, notes):
    panels = []
    for (wl, items), mechs in sorted(groups.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
        s_name = serial.get((wl, items, "BM_"))
        if not s_name:
            continue
        ws = {w for (p, _), per_w in mechs.items() if p == "BM_" for w in per_w}
        if not ws:
            continue
        W = pick_workers(run, ws)
        if W > 1:
            panels.append((wl, items, mechs, W, run.median(s_name) / float(items)))
    if not panels:
        notes.append("pool_break_even: no pool map with more than one worker and a serial map")
        return
    fig, axes = _grid(plt, len(panels))
    for ax, (wl, items, mechs, W, s_item) in zip(axes.flat, panels):
        chunks = sorted({c for (p, _), per_w in mechs.items() if p == "BM_"
                         for c in per_w.get(W, {})}, key=_chunk_pos)
        pos = {c: i for i, c in enumerate(chunks)}
        for (prefix, mech), per_w in sorted(mechs.items(), key=lambda kv: _mech_order(kv[0][1])):
            if prefix != "BM_" or W not in per_w:
                continue
            pts, xs = [], []
            for c, nm in sorted(per_w[W].items(), key=lambda kv: _chunk_pos(kv[0])):
                st = _stats(run, nm, "time",
                            lambda t: break_even(t / float(items), s_item, W))
                xs.append(pos[c])
                pts.append((st[0], min(st[1:]), max(st[1:])))
            n = gbench.Name(prefix, mech, ())
            _line(ax, xs, pts, _mech_label(n), _style(n))
        ax.set_xticks(range(len(chunks)))
        ax.set_xticklabels(chunks)
        ax.set_yscale("log")
        ax.set_xlabel("chunksize")
        ax.set_ylabel("break-even item cost c* (ns)")
        ax.set_title(f"{wl}, {items} items, W={W}", fontsize="medium")
        ax.legend(loc="best", fontsize="x-small")
    fig.suptitle("Break-even item cost: a pool of W workers beats the plain loop once an "
                 "item costs more than c*\nc* = o·W/(W−1), o = pool time per item − "
                 "serial time per item / W · " + _subtitle(run) + " · " + SPREAD_NOTE,
                 fontsize="medium")
    fig.tight_layout()
    _save(plt, fig, out_dir, "pool_break_even", written)


HISTORY_MARKERS = "osD^v<>ph*"


def chart_history(plt, runs_dir: Path, out_dir, written, notes):
    import history
    if not runs_dir.is_dir():
        notes.append(f"history: {runs_dir} does not exist")
        return
    runs, problems = history.list_runs(runs_dir)
    notes += [f"history: skipped {p}" for p in problems]
    # Quick and full runs measure with different repetitions and times:
    # their ratios are not one series.
    kinds = [(label, [(p, r) for p, r in runs if bool(r.mpbench.get("quick")) == quick])
             for label, quick in (("full runs", False), ("quick runs", True))]
    kinds = [(label, rs) for label, rs in kinds if rs and history.analyse(rs)]
    if not kinds:
        notes.append(f"history: no run in {runs_dir} has a headline ratio")
        return
    width = max(8, 0.5 * max(len(rs) for _, rs in kinds) + 5)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(width, 5 * len(kinds)), squeeze=False)
    for ax, (label, rs) in zip(axes[:, 0], kinds):
        heads = history.analyse(rs)
        x = list(range(1, len(rs) + 1))
        for i, h in enumerate(heads):
            # Each series a little to the side (the axis spans whole runs),
            # so that the error bars of one run stay apart.
            dx = (i - (len(heads) - 1) / 2) * min(0.25, 0.6 / max(len(heads), 1))
            pts = [(j + dx, v, lo, hi) for j, v, lo, hi in zip(x, h.values, h.lows, h.highs)
                   if v is not None]
            if not pts:
                continue
            colour = colour_of(h.family)
            kind_style = "--" if h.family.endswith("PingPong") else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=HISTORY_MARKERS[i % 10],
                    markersize=4, color=colour, linestyle=kind_style,
                    label=f"{h.family} / {h.reference}")
            # Error bars, not bands: a group may hold one run, and 15 bands
            # over each other would hide the lines.
            bars = [p for p in pts if p[2] is not None and p[3] is not None]
            if bars:
                ax.errorbar([b[0] for b in bars], [b[1] for b in bars],
                            yerr=[[b[1] - b[2] for b in bars], [b[3] - b[1] for b in bars]],
                            fmt="none", ecolor=colour, elinewidth=1, capsize=2,
                            alpha=ERRORBAR_ALPHA)
            for s in h.steps:
                ax.annotate(f"{s.change * 100:+.0f}%", (s.index + 1 + dx, s.after),
                            textcoords="offset points", xytext=(0, 6), ha="center",
                            fontsize="x-small", color=colour)
        ticks = []
        for p, r in rs:
            row = history.run_row(p, r)
            ticks.append(f"{row['commit']}\n{str(row['started'] or '')[:10]}")
        ax.set_xticks(x)
        ax.set_xlim(0.5, len(rs) + 0.5)
        ax.set_xticklabels(ticks, rotation=45, ha="right", fontsize="x-small")
        ax.axhline(1.0, color="black", linewidth=0.8)
        # The ratios span 0.9 (a pipe against the raw pipe) to hundreds (a
        # channel against memcpy): only a log axis shows every line's trend.
        ax.set_yscale("log")
        ax.set_xlabel("run (commit, date), oldest first")
        ax.set_ylabel("our code / raw reference\n(median time ratio)")
        ax.set_title(f"Headline ratios over commits, {label} (lower is better; "
                     "labels mark step changes; round trips dashed)\nbars: fastest "
                     "repetition / slowest reference to slowest / fastest "
                     "(geometric mean over the family)", fontsize="medium")
        _legend_outside(ax)
    fig.tight_layout()
    _save(plt, fig, out_dir, "history", written)


def make_charts(run: gbench.Run, out_dir: Path, runs_dir: Path | None = None):
    """Writes every chart the run has data for; returns (files, notes)."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    for chart in (chart_throughput, chart_latency, chart_latency_cdf, chart_fork,
                  chart_pool):
        chart(plt, run, out_dir, written, notes)
    if runs_dir is not None:
        chart_history(plt, runs_dir, out_dir, written, notes)
    return written, notes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plot", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run file (Google Benchmark JSON), e.g. results/runs/X.json")
    p.add_argument("--out-dir", help="where the charts go (default results/charts "
                   "of the source tree)")
    p.add_argument("--runs-dir", help="run files for the history chart (default "
                   "results/runs of the source tree)")
    p.add_argument("--no-history", action="store_true", help="skip the history chart")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run = gbench.load_run(gbench.user_path(args.run))
    except gbench.InputError as e:
        print(f"plot: error: {e}", file=sys.stderr)
        return 2
    root = gbench.repo_root()
    out_dir = gbench.user_path(args.out_dir) if args.out_dir else root / "results" / "charts"
    runs_dir = None if args.no_history else (
        gbench.user_path(args.runs_dir) if args.runs_dir else root / "results" / "runs")
    written, notes = make_charts(run, out_dir, runs_dir)
    for n in notes:
        print(f"plot: note: {n}", file=sys.stderr)
    for w in written:
        print(w)
    if not written:
        print("plot: error: nothing to chart in this run", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
