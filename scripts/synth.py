#!/usr/bin/python3
"""Synthetic runs in Google Benchmark's JSON shape, for tests and fixtures,
and a deliberate slowdown applied to an existing run file.

The benchmark names follow the families' contract (fork, ipc, pool and the
Python reference); the numbers are plausible, not measured.

    # scale one primitive of a real run by 10% (what a slowdown injected into
    # the library would do), e.g. to check the gate without rebuilding:
    /usr/bin/python3 scripts/synth.py slow RUN.json OUT.json \\
        --match 'BM_ProcessStartJoin' --factor 1.10
    # regenerate scripts/testdata/*.json
    /usr/bin/python3 scripts/synth.py fixtures scripts/testdata
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import sys
from pathlib import Path

BYTES = (8, 64, 512, 4096, 65536, 1048576, 16777216)
RSS = (0, 1, 64, 512, 2048)
WORKLOADS = ("double", "sha512_inherited", "sha512_sent", "sleep")
CHUNKS = ("1", "8", "64", "512", "4096", "default")
WORKERS = (1, 2, 4, 8)

FINGERPRINT = {
    "cpu_model": "Synthetic CPU @ 2.60GHz", "cores": 2,
    "caches": "L1d:48K,L1i:32K,L2:1024K,L3:32768K", "kernel": "6.1.0-synthetic",
    "compiler_version": "gcc (Debian 12.2.0-14) 12.2.0",
    "flags": "-O2 -DNDEBUG -std=c++20", "compilation_mode": "opt",
}


def fork_spec() -> dict:
    """{full name: (median ns, {counter: value})} for the fork family."""
    spec = {}
    base = {"ForkExitWait": 90e3, "Vfork": 40e3, "PosixSpawn": 300e3,
            "ProcessStartJoin": 100e3}
    for fam, t in base.items():
        spec[f"BM_{fam}/real_time"] = t
        for mib in RSS:
            spec[f"BM_{fam}/rss_mib:{mib}/real_time"] = (
                t + (mib * 45e3 if fam not in ("Vfork", "PosixSpawn") else mib * 50))
    spec["BM_ForkExec/real_time"] = 500e3
    spec["BM_ThreadStartJoin/real_time"] = 40e3
    return {k: (v, {"items_per_second": 1e9 / v}) for k, v in spec.items()}


def ipc_spec() -> dict:
    spec = {}

    def tp(name, nbytes, per_byte, fixed):
        t = fixed + per_byte * nbytes
        spec[name] = (t, {"bytes_per_second": nbytes * 1e9 / t,
                          "items_per_second": 1e9 / t})

    for n in BYTES:
        tp(f"BM_MemcpyThroughput/bytes:{n}/real_time", n, 0.05, 5)
        tp(f"BM_RawPipeThroughput/bytes:{n}/real_time", n, 0.4, 900)
        tp(f"BM_RawPipeGrownThroughput/bytes:{n}/real_time", n, 0.38, 900)
        tp(f"BM_PipeThroughput/bytes:{n}/real_time", n, 0.42, 1000)
        tp(f"BM_RawRingThroughput/bytes:{n}/real_time", n, 0.06, 10)
        tp(f"BM_SpscRingThroughput/bytes:{n}/real_time", n, 0.07, 20)
        tp(f"BM_SpscRingLoanThroughput/bytes:{n}/real_time", n, 0.05, 20)
        tp(f"BM_BoostMqThroughput/bytes:{n}/real_time", n, 0.3, 1500)
        for s in (0, 50):
            tp(f"BM_QueueThroughput/bytes:{n}/spin_us:{s}/real_time", n, 0.15, 400 - s)
            tp(f"BM_ChannelThroughput/bytes:{n}/spin_us:{s}/real_time", n, 0.12, 300 - s)
            tp(f"BM_RingChannelThroughput/bytes:{n}/slots:64/spin_us:{s}/real_time",
               n, 0.1, 200 - s)

    def pp(name, t):
        spec[name] = (t, {"p50_ns": t * 0.95, "p99_ns": t * 2.5,
                          "items_per_second": 1e9 / t})

    pp("BM_RawFutexPingPong/manual_time", 8000)
    pp("BM_RawSpinPingPong/manual_time", 400)
    for n in BYTES[:5]:
        pp(f"BM_RawPipePingPong/bytes:{n}/manual_time", 12000 + n * 0.5)
        pp(f"BM_RawPipeGrownPingPong/bytes:{n}/manual_time", 12000 + n * 0.45)
        pp(f"BM_PipePingPong/bytes:{n}/manual_time", 12500 + n * 0.5)
        pp(f"BM_RawRingPingPong/bytes:{n}/manual_time", 400 + n * 0.1)
        pp(f"BM_BoostMqPingPong/bytes:{n}/manual_time", 15000 + n * 0.4)
        for s in (0, 50):
            base = 9000 if s == 0 else 600
            pp(f"BM_QueuePingPong/bytes:{n}/spin_us:{s}/manual_time", base + n * 0.2)
            pp(f"BM_ChannelPingPong/bytes:{n}/spin_us:{s}/manual_time", base * 0.9 + n * 0.2)
            pp(f"BM_SpscRingPingPong/bytes:{n}/spin_us:{s}/manual_time",
               base * 0.8 + n * 0.15)
    return spec


def pool_spec(items=(1000,), workloads=WORKLOADS, chunks=CHUNKS,
              workers=WORKERS) -> dict:
    spec = {}
    per_item = {"double": 20.0, "sha512_inherited": 2000.0, "sha512_sent": 2500.0,
                "sleep": 100e3}
    for wl, cost in per_item.items():
        if wl not in workloads:
            continue
        for n in items:
            serial = cost * n
            spec[f"BM_SerialMap/{wl}/items:{n}/real_time"] = (
                serial, {"items_per_second": n * 1e9 / serial, "speedup": 1.0})
            for mech, overhead in (("PoolMap", 1.0), ("PoolImapUnordered", 1.2),
                                   ("ForkMap", 3.0), ("ThreadPoolMap", 0.5)):
                for c in chunks:
                    csize = 64 if c == "default" else int(c)
                    for w in workers:
                        eff = min(w, 2)  # two cores
                        if wl == "sleep":
                            eff = w
                        t = serial / eff + overhead * 8000 * (n / max(csize, 1)) \
                            + 50e3 * w
                        name = (f"BM_{mech}/{wl}/items:{n}/chunksize:{c}/workers:{w}"
                                "/real_time")
                        spec[name] = (t, {"items_per_second": n * 1e9 / t,
                                          "speedup": serial / t})
    for w in WORKERS:
        spec[f"BM_PoolCreate/workers:{w}/real_time"] = (200e3 * w, {})
        spec[f"BM_PoolTeardown/workers:{w}/real_time"] = (150e3 * w, {})
    spec["BM_ApplyAsyncRoundTrip/real_time"] = (30e3, {"items_per_second": 1e9 / 30e3})
    return spec


def python_spec(spec: dict, factor: float = 3.0) -> dict:
    """The Python reference of `spec`: Py prefix, no timing suffix, slower."""
    out = {}
    for name, (t, counters) in spec.items():
        if not name.startswith("BM_"):
            continue
        py = re.sub(r"/(real|manual)_time$", "", "Py" + name[3:])
        scaled = {}
        for k, v in counters.items():
            if k.endswith("_per_second"):
                scaled[k] = v / factor
            elif k.endswith("_ns"):
                scaled[k] = v * factor
            else:
                scaled[k] = v
        out[py] = (t * factor, scaled)
    return out


def _aggregate(agg: str, vals: list[float]) -> float:
    n = len(vals)
    mean = sum(vals) / n
    if agg == "mean":
        return mean
    if agg == "median":
        v = sorted(vals)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    sd = math.sqrt(sum((x - mean) ** 2 for x in vals) / (n - 1))
    return sd if agg == "stddev" else (sd / mean if mean else 0.0)


def make_run(spec: dict, repetitions: int = 9, noise: float = 0.01, seed: int = 0,
             scale: dict | None = None, context: dict | None = None,
             aggregates: bool = True, time_unit: str = "ns") -> dict:
    """A run file with `repetitions` samples per benchmark around the spec's
    median (multiplicative Gaussian noise of relative size `noise`).
    `scale` maps a regex to a factor applied to matching benchmarks' times
    (rates divided, latencies multiplied)."""
    rng = random.Random(seed)
    unit = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[time_unit]
    entries = []
    for fi, (name, (t, counters)) in enumerate(spec.items()):
        factor = 1.0
        for pattern, f in (scale or {}).items():
            if re.search(pattern, name):
                factor *= f
        samples = []
        for i in range(repetitions):
            e = 1.0 + rng.gauss(0.0, noise)
            rt = t * factor * e
            entry = {
                "name": name, "family_index": fi, "per_family_instance_index": 0,
                "run_name": name, "run_type": "iteration",
                "repetitions": repetitions, "repetition_index": i, "threads": 1,
                "iterations": 1000, "real_time": rt / unit, "cpu_time": rt / unit / 3,
                "time_unit": time_unit,
            }
            for k, v in counters.items():
                if k.endswith("_per_second"):
                    entry[k] = v / (factor * e)
                elif k.endswith("_ns"):
                    entry[k] = v * factor * e
                elif k == "speedup":
                    entry[k] = v / (factor * e)
                else:
                    entry[k] = v
            samples.append(entry)
        entries += samples
        if aggregates and repetitions > 1:
            for agg in ("mean", "median", "stddev", "cv"):
                a = {"name": f"{name}_{agg}", "family_index": fi,
                     "per_family_instance_index": 0, "run_name": name,
                     "run_type": "aggregate", "repetitions": repetitions,
                     "threads": 1, "aggregate_name": agg,
                     "aggregate_unit": "percentage" if agg == "cv" else "time",
                     "iterations": repetitions, "time_unit": time_unit}
                for k in ["real_time", "cpu_time"] + list(counters):
                    a[k] = _aggregate(agg, [s[k] for s in samples])
                entries.append(a)
    ctx = {
        "date": "2026-01-01T00:00:00+00:00", "host_name": "synthetic",
        "num_cpus": 2, "mhz_per_cpu": 2600, "cpu_scaling_enabled": False,
        "caches": [{"type": "Data", "level": 1, "size": 49152, "num_sharing": 1}],
        "load_avg": [0.1, 0.1, 0.1], "library_build_type": "debug",
        "mpbench": {"suite_version": "1", "commit": "0" * 40,
                    "commit_short": "0000000", "dirty": False, "quick": False,
                    "machine_class": "x86_64-2cpu", "host": "synthetic",
                    "started_utc": "2026-01-01T00:00:00Z",
                    "fingerprint": dict(FINGERPRINT)},
    }
    if context:
        for k, v in context.items():
            if k == "mpbench":
                ctx["mpbench"].update(v)
            else:
                ctx[k] = v
    return {"context": ctx, "benchmarks": entries}


def slow_run(data: dict, pattern: str, factor: float) -> tuple[dict, int]:
    """A copy of a run file with matching benchmarks' times multiplied by
    `factor` (rates divided, *_ns counters multiplied); and how many
    benchmarks matched."""
    out = copy.deepcopy(data)
    matched = set()
    for e in out.get("benchmarks", []):
        name = e.get("run_name") or e.get("name", "")
        if not re.search(pattern, name) or e.get("aggregate_unit") == "percentage":
            continue
        matched.add(name)
        for k in list(e):
            v = e[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if k in ("real_time", "cpu_time") or k.endswith("_ns"):
                e[k] = v * factor
            elif k.endswith("_per_second") or k == "speedup":
                e[k] = v / factor
    m = out.setdefault("context", {}).setdefault("mpbench", {})
    m["inject_slowdown"] = f"synthetic: {pattern} x{factor:g}"
    return out, len(matched)


def full_spec(small: bool = False) -> dict:
    """Every family plus a Python reference for part of them; `small` keeps
    two workloads, chunksizes and worker counts of the pool family."""
    pool = (pool_spec(workloads=("double", "sleep"), chunks=("8", "default"),
                      workers=(1, 2)) if small else pool_spec())
    spec = {**fork_spec(), **ipc_spec(), **pool}
    spec.update(python_spec({k: v for k, v in spec.items()
                             if re.search(r"ForkExitWait|ProcessStartJoin|Pipe|"
                                          r"Queue|SerialMap|/double/", k)}))
    # Rows added to the suite later go last, so that the seeded noise of
    # every row before them (which the tests' scenarios rely on) is unchanged.
    for n in BYTES:
        t = 950 + 0.38 * n
        spec[f"BM_RawPipeFramedThroughput/bytes:{n}/real_time"] = (
            t, {"bytes_per_second": n * 1e9 / t, "items_per_second": 1e9 / t})
    return spec


def write_fixtures(d: Path) -> None:
    """The small bad-input fixtures of the tests (the large synthetic runs are
    made on the fly with make_run)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "not_json.json").write_text("Run on (2 X 2600 MHz CPU s)\nBM_X  12 ns\n")
    good = json.dumps(make_run(fork_spec(), repetitions=2, seed=2, aggregates=False),
                      indent=1)
    (d / "truncated.json").write_text(good[: len(good) // 2])
    (d / "no_benchmarks.json").write_text(json.dumps({"context": {"num_cpus": 2}}) + "\n")
    (d / "other_names.json").write_text(json.dumps(make_run(
        {"BM_Unrelated/real_time": (1000.0, {})}, repetitions=5), indent=1) + "\n")
    (d / "single_rep.json").write_text(json.dumps(make_run(
        fork_spec(), repetitions=1, seed=3), indent=1) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="synth", description=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slow", help="scale matching benchmarks of a run file")
    s.add_argument("run", help="input run file")
    s.add_argument("out", help="output run file")
    s.add_argument("--match", required=True, metavar="REGEX",
                   help="benchmarks whose run_name matches this regex are slowed")
    s.add_argument("--factor", type=float, default=1.10,
                   help="time multiplier (default 1.10: 10%% slower)")
    f = sub.add_parser("fixtures", help="write the test fixtures")
    f.add_argument("dir", help="directory, e.g. scripts/testdata")
    args = p.parse_args(argv)
    if args.cmd == "fixtures":
        write_fixtures(Path(args.dir))
        return 0
    try:
        data = json.loads(Path(args.run).read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"synth: error: {args.run}: {e}", file=sys.stderr)
        return 2
    out, n = slow_run(data, args.match, args.factor)
    if not n:
        print(f"synth: error: no benchmark matches {args.match!r}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"synth: {n} benchmarks x{args.factor:g} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
