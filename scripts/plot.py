#!/usr/bin/python3
"""Charts of one run (and of the stored history), SVG and PNG.

    bazel run //scripts:plot -- RUN.json [--out-dir results/charts]

Writes into results/charts/ (each chart as NAME.svg and NAME.png):
  throughput      bytes per second against message size, every mechanism,
                  with the memcpy and raw-pipe lines (log-log)
  latency         round trip against message size: median (p50) and p99
  fork_rss        process creation cost against the parent's resident memory
                  for fork, vfork, posix_spawn and mp::Process
  pool_<workload>_items<N>
                  map time against chunksize, one line per worker count,
                  serial as a horizontal line, one panel per mechanism
  pool_speedup    speedup over serial against workers (best chunksize)
  history         headline ratios (our code / raw reference) over the runs in
                  results/runs/, in order (see scripts/history.py)
A chart whose benchmarks the run lacks is skipped with a note. The Python
reference (Py* benchmarks) is drawn dashed in the colour of its C++ sibling.
Medians over repetitions throughout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import gbench

KIB, MIB, GIB = 2**10, 2**20, 2**30
PY_STYLE = dict(linestyle="--", alpha=0.85)
REF_STYLES = {  # raw references, drawn the same way everywhere
    "MemcpyThroughput": dict(color="black", linewidth=2.2),
    "RawPipeThroughput": dict(color="0.45", linewidth=2.2),
    "RawPipePingPong": dict(color="0.45", linewidth=2.2),
    "RawFutexPingPong": dict(color="black", linewidth=1.5, linestyle=":"),
    "RawSpinPingPong": dict(color="0.3", linewidth=1.5, linestyle="-."),
    "ForkExitWait": dict(color="black", linewidth=2.2),
}
PRETTY = {
    "MemcpyThroughput": "memcpy", "RawPipeThroughput": "raw pipe",
    "PipeThroughput": "mp pipe", "QueueThroughput": "Queue",
    "JoinableQueueThroughput": "JoinableQueue",
    "ChannelThroughput": "Channel", "RingChannelThroughput": "RingChannel",
    "BoostMqThroughput": "Boost message_queue",
    "RawPipePingPong": "raw pipe", "RawFutexPingPong": "raw futex",
    "RawSpinPingPong": "raw spin", "PipePingPong": "mp pipe",
    "QueuePingPong": "Queue", "ChannelPingPong": "Channel",
    "BoostMqPingPong": "Boost message_queue",
    "ForkExitWait": "fork + _exit + waitpid", "Vfork": "vfork",
    "PosixSpawn": "posix_spawn (/bin/true)", "ProcessStartJoin": "mp::Process start+join",
    "PoolMap": "Pool.map", "PoolImapUnordered": "Pool.imap_unordered",
    "ForkMap": "fork per chunk", "ThreadPoolMap": "thread pool",
}


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
    base = PRETTY.get(n.family, n.family)
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
    label = base + (f" ({', '.join(extra)})" if extra else "")
    return ("Python " + label) if n.prefix == "Py" else label


class Colours:
    """One colour per mechanism, shared by its C++ and Python lines."""

    def __init__(self):
        import matplotlib
        cmap = matplotlib.colormaps["tab10"]
        # tab10 without its grey (7), which the raw references use
        self.palette = [cmap(i) for i in range(10) if i != 7]
        self.known: dict[str, object] = {}

    def __call__(self, key: str):
        if key not in self.known:
            self.known[key] = self.palette[len(self.known) % len(self.palette)]
        return self.known[key]


def _style(n: gbench.Name, key: str, colours: Colours) -> dict:
    if n.family in REF_STYLES:
        st = dict(REF_STYLES[n.family])
    else:
        st = dict(color=colours(key), linewidth=1.5)
    if n.prefix == "Py":
        st.update(PY_STYLE)
    st.setdefault("marker", "o")
    st["markersize"] = 3.5
    return st


def _series(run: gbench.Run, families, xkey: str, metric: str = "time",
            value=None):
    """{(prefix, family, other args): [(x, value)]} for benchmarks of the
    given families that have argument `xkey`; `value(name)` overrides."""
    out: dict[tuple, list] = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.family not in families or n.prefix not in ("BM_", "Py"):
            continue
        x = n.arg(xkey)
        v = value(name) if value else run.median(name, metric)
        if v is None:
            continue
        rest = tuple((k, a) for k, a in n.args if k != xkey)
        if x is None:
            out.setdefault((n.prefix, n.family, rest, "flat"), []).append((None, v))
            continue
        try:
            xv = float(x)
        except ValueError:
            continue
        out.setdefault((n.prefix, n.family, rest, "x"), []).append((xv, v))
    return {k: sorted(v, key=lambda p: (p[0] is None, p[0] or 0)) for k, v in out.items()}


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


THROUGHPUT = ("MemcpyThroughput", "RawPipeThroughput", "PipeThroughput",
              "QueueThroughput", "ChannelThroughput", "RingChannelThroughput",
              "BoostMqThroughput")
PINGPONG = ("RawPipePingPong", "RawFutexPingPong", "RawSpinPingPong", "PipePingPong",
            "QueuePingPong", "ChannelPingPong", "BoostMqPingPong")
FORK = ("ForkExitWait", "Vfork", "PosixSpawn", "ProcessStartJoin")
POOL = ("PoolMap", "PoolImapUnordered", "ForkMap", "ThreadPoolMap")


def _order(families):
    return lambda item: (families.index(item[0][1]) if item[0][1] in families else 99,
                         item[0][0] != "BM_", item[0][2])


def chart_throughput(plt, run, out_dir, written, notes):
    def bps(name):
        v = run.median(name, "bytes_per_second")
        if v is None:
            t, b = run.median(name), gbench.parse_name(name).arg("bytes")
            v = float(b) * 1e9 / t if t and b else None
        return v / GIB if v else None

    series = _series(run, THROUGHPUT, "bytes", value=bps)
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
    # Panel 1: mechanisms that block (spin_us:0 or no spin option); panel 2,
    # when the run has spinning variants: those, with the same references.
    panels = [("block only (spin_us:0) and mechanisms without a spin option",
               lambda k: spin(k[2]) == 0)]
    if spinning:
        panels.append(("spinning before blocking (spin_us > 0)",
                       lambda k: spin(k[2]) > 0 or k[1] in REF_STYLES))
    colours = Colours()
    fig, axes = plt.subplots(1, len(panels), figsize=(7.2 * len(panels) + 3, 5.8),
                             sharey=True, squeeze=False)
    for ax, (title, keep) in zip(axes[0], panels):
        xs = []
        for (prefix, fam, rest, kind), pts in sorted(series.items(), key=_order(THROUGHPUT)):
            if not keep((prefix, fam, rest, kind)):
                continue
            n = gbench.Name(prefix, fam, rest)
            # one colour per mechanism (and ring size), the same in both panels
            key = fam + str([a for a in rest if a[0] != "spin_us"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts],
                    label=_mech_label(n), **_style(n, key, colours))
            xs += [p[0] for p in pts]
        _size_axis(ax, xs)
        ax.set_yscale("log")
        ax.set_xlabel("message size")
        ax.set_title(title, fontsize="medium")
        ax.legend(loc="lower right", fontsize="x-small")
    axes[0][0].set_ylabel("throughput (GiB/s, median)")
    fig.suptitle("Throughput against message size (one producer, one consumer process)\n"
                 + _subtitle(run), fontsize="medium")
    fig.tight_layout()
    _save(plt, fig, out_dir, "throughput", written)


def chart_latency(plt, run, out_dir, written, notes):
    panels = (("p50_ns", "median (p50)"), ("p99_ns", "99th percentile (p99)"))
    data = {}
    for metric, _ in panels:
        def val(name, metric=metric):
            v = run.median(name, metric)
            if v is None and metric == "p50_ns":
                v = run.median(name)  # mean round trip when no percentile
            return v / 1e3 if v else None
        data[metric] = _series(run, PINGPONG, "bytes", value=val)
    if not any(data.values()):
        notes.append("latency: no *PingPong benchmarks")
        return
    colours = Colours()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for ax, (metric, title) in zip(axes, panels):
        xs = [p[0] for pts in data[metric].values() for p in pts if p[0] is not None]
        for (prefix, fam, rest, kind), pts in sorted(data[metric].items(),
                                                      key=_order(PINGPONG)):
            n = gbench.Name(prefix, fam, rest)
            st = _style(n, fam + str(rest), colours)
            if kind == "flat":
                st.pop("marker", None)
                st.pop("markersize", None)
                st.setdefault("linestyle", ":")
                ax.axhline(pts[0][1], label=_mech_label(n) + " (no payload)", **st)
            else:
                ax.plot([p[0] for p in pts], [p[1] for p in pts],
                        label=_mech_label(n), **st)
        if xs:
            _size_axis(ax, xs)
        ax.set_yscale("log")
        ax.set_xlabel("message size")
        ax.set_title(f"round trip, {title}", fontsize="medium")
    axes[0].set_ylabel("round-trip time (µs)")
    fig.suptitle("Round-trip latency per mechanism (ping-pong between two processes)\n"
                 + _subtitle(run), fontsize="medium")
    _legend_outside(axes[1])
    _save(plt, fig, out_dir, "latency", written)


def chart_fork(plt, run, out_dir, written, notes):
    series = _series(run, FORK, "rss_mib",
                     value=lambda n: (run.median(n) or 0) / 1e3 or None)
    series = {k: v for k, v in series.items() if k[3] == "x"}
    if not series:
        notes.append("fork_rss: no */rss_mib:N benchmarks")
        return
    colours = Colours()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    xs = []
    for (prefix, fam, rest, _), pts in sorted(series.items(), key=_order(FORK)):
        n = gbench.Name(prefix, fam, rest)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=_mech_label(n, ("rss_mib",)),
                **_style(n, fam, colours))
        xs += [p[0] for p in pts]
    ax.set_xscale("symlog", linthresh=1)
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("parent's resident memory (MiB, written 4 KiB pages)")
    ax.set_ylabel("create + reap one child (µs, median)")
    ax.set_title("Process creation cost against parent RSS\n" + _subtitle(run),
                 fontsize="medium")
    _legend_outside(ax)
    _save(plt, fig, out_dir, "fork_rss", written)


def _chunk_pos(c: str) -> float:
    try:
        return float(c)
    except ValueError:
        return float("inf")


def chart_pool(plt, run, out_dir, written, notes):
    # groups[(workload, items)][(prefix, mech)][workers][chunk] = ms
    groups: dict = {}
    serial: dict = {}
    for name in run.names():
        n = gbench.parse_name(name)
        if n.prefix not in ("BM_", "Py"):
            continue
        wl, items = n.arg(0), n.arg("items")
        t = run.median(name)
        if t is None or wl is None or items is None:
            continue
        if n.family == "SerialMap":
            serial[(wl, items, n.prefix)] = t / 1e6
        elif n.family in POOL and n.arg("chunksize") and n.arg("workers"):
            g = groups.setdefault((wl, items), {}).setdefault((n.prefix, n.family), {})
            g.setdefault(int(n.arg("workers")), {})[n.arg("chunksize")] = t / 1e6
    if not groups:
        notes.append("pool: no BM_PoolMap-style benchmarks")
        return
    speed_panels = []
    for (wl, items), mechs in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        mech_names = sorted({m for _, m in mechs}, key=POOL.index)
        fig, axes = plt.subplots(1, len(mech_names), figsize=(4.6 * len(mech_names), 4.8),
                                 sharey=True, squeeze=False)
        colours = Colours()
        chunks_all = sorted({c for d in mechs.values() for w in d.values() for c in w},
                            key=_chunk_pos)
        pos = {c: i for i, c in enumerate(chunks_all)}
        for ax, mech in zip(axes[0], mech_names):
            for prefix in ("BM_", "Py"):
                per_w = mechs.get((prefix, mech))
                if not per_w:
                    continue
                for w in sorted(per_w):
                    pts = sorted(per_w[w].items(), key=lambda kv: _chunk_pos(kv[0]))
                    st = dict(color=colours(str(w)), marker="o", markersize=3.5)
                    if prefix == "Py":
                        st.update(PY_STYLE)
                    ax.plot([pos[c] for c, _ in pts], [v for _, v in pts],
                            label=f"{'Python, ' if prefix == 'Py' else ''}{w} worker{'s' if w != 1 else ''}",
                            **st)
                s = serial.get((wl, items, prefix))
                if s:
                    ax.axhline(s, color="black", linewidth=1.8,
                               linestyle="--" if prefix == "Py" else "-",
                               label=("Python serial" if prefix == "Py" else "serial"))
            ax.set_xticks(range(len(chunks_all)))
            ax.set_xticklabels(chunks_all)
            ax.set_yscale("log")
            ax.set_xlabel("chunksize")
            ax.set_title(PRETTY.get(mech, mech), fontsize="medium")
        axes[0][0].set_ylabel("time to map all items (ms, median)")
        fig.suptitle(f"Map time against chunksize: workload {wl}, {items} items\n"
                     + _subtitle(run), fontsize="medium")
        _legend_outside(axes[0][-1])
        _save(plt, fig, out_dir, f"pool_{wl}_items{items}", written)
        speed_panels.append((wl, items, mechs))
    # speedup against workers: best chunksize per worker count
    cols = min(len(speed_panels), 4)
    rows = (len(speed_panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.9 * rows), squeeze=False)
    colours = Colours()
    for ax, (wl, items, mechs) in zip(axes.flat, speed_panels):
        maxw = 1
        for (prefix, mech), per_w in sorted(mechs.items(),
                                            key=lambda kv: (POOL.index(kv[0][1]), kv[0][0])):
            s = serial.get((wl, items, prefix))
            if not s:
                continue
            ws = sorted(per_w)
            maxw = max(maxw, ws[-1])
            n = gbench.Name(prefix, mech, ())
            st = _style(n, mech, colours)
            ax.plot(ws, [s / min(per_w[w].values()) for w in ws],
                    label=_mech_label(n), **st)
        ax.plot([1, maxw], [1, maxw], color="0.6", linestyle=":", label="ideal")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks([w for w in (1, 2, 4, 8, 16, 32) if w <= maxw])
        ax.set_xticklabels([str(w) for w in (1, 2, 4, 8, 16, 32) if w <= maxw])
        ax.minorticks_off()
        ax.set_xlabel("workers")
        ax.set_ylabel("speedup over serial")
        ax.set_title(f"{wl}, {items} items", fontsize="medium")
    for ax in list(axes.flat)[len(speed_panels):]:
        ax.set_visible(False)
    fig.suptitle("Speedup against workers (best chunksize for each worker count)\n"
                 + _subtitle(run), fontsize="medium")
    _legend_outside(axes[0][-1] if len(speed_panels) >= cols else axes[0][len(speed_panels) - 1])
    fig.tight_layout()
    _save(plt, fig, out_dir, "pool_speedup", written)


def chart_history(plt, runs_dir: Path, out_dir, written, notes):
    import history
    if not runs_dir.is_dir():
        notes.append(f"history: {runs_dir} does not exist")
        return
    runs, problems = history.list_runs(runs_dir)
    notes += [f"history: skipped {p}" for p in problems]
    heads = history.analyse(runs)
    if not heads:
        notes.append(f"history: no run in {runs_dir} has a headline ratio")
        return
    colours = Colours()
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(runs) + 5), 5))
    x = list(range(1, len(runs) + 1))
    for h in heads:
        pts = [(i, v) for i, v in zip(x, h.values) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4,
                color=colours(h.family), label=f"{h.family} / {h.reference}")
        for s in h.steps:
            ax.annotate(f"{s.change * 100:+.0f}%", (s.index + 1, s.after),
                        textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize="x-small", color=colours(h.family))
    labels = []
    for p, r in runs:
        row = history.run_row(p, r)
        labels.append(f"{row['commit']}\n{str(row['started'] or '')[:10]}")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize="x-small")
    ax.axhline(1.0, color="black", linewidth=0.8)
    # The ratios span 0.9 (a pipe against the raw pipe) to hundreds (a
    # channel against memcpy): only a log axis shows every line's trend.
    ax.set_yscale("log")
    ax.set_xlabel("run (commit, date), oldest first")
    ax.set_ylabel("our code / raw reference (median time ratio)")
    ax.set_title("Headline ratios over commits (lower is better; labels mark step changes)",
                 fontsize="medium")
    _legend_outside(ax)
    _save(plt, fig, out_dir, "history", written)


def make_charts(run: gbench.Run, out_dir: Path, runs_dir: Path | None = None):
    """Writes every chart the run has data for; returns (files, notes)."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    for chart in (chart_throughput, chart_latency, chart_fork, chart_pool):
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
