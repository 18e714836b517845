"""The one place that says what each benchmark family is measured against.

A benchmark of our own code is only meaningful next to the raw system
mechanism measured in the same run: `BM_ProcessStartJoin` (mp::Process)
against `BM_ForkExitWait` (bare fork+_exit+waitpid), `BM_PipeThroughput`
against `BM_RawPipeThroughput`, `BM_PoolMap` against `BM_SerialMap`. The
ratio of the two is what the noise-robust comparison gates on and what the
history tracks: a machine that is 20% slower across the board changes both
sides and leaves the ratio alone; our code getting 5% slower does not.

Rules are written without the `BM_`/`Py` prefix and apply within one prefix:
`PyPipeThroughput/bytes:64` is compared with `PyRawPipeThroughput/bytes:64`.
Only `BM_` benchmarks of our own code are gated (GATED_PREFIXES, `gate`);
the Python reference and third-party mechanisms (Boost) are reported only.

To add a family: add a Rule to RULES (or its name to MACHINE_NORMALISED when
no raw counterpart exists). Nothing elsewhere guesses references from names.

Which rows a reference family has is said once, where its binary registers
them (bench/*.cc): a reference registered on part of our family's grid only
(the raw ring pool) is a `partial` Ref, which applies where the run has the
row (`references(name, has=run.has)`); this module does not repeat the grid.
//scripts:references_test checks these rules against the rows the bench
binaries list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import gbench


@dataclass(frozen=True)
class Ref:
    """Reference family and which arguments of the benchmark carry over.

    keep: argument keys (str) or positional argument indices (int) copied
    from the benchmark's name, in this order; all others are dropped.
    when: optional predicate on the parsed name; the reference applies only
    where it returns True.
    partial: the reference family is registered on part of the grid only;
    given the run (references(..., has=)), it applies where the run has it.
    """

    family: str
    keep: tuple = ()
    when: Callable[[gbench.Name], bool] | None = None
    note: str = ""
    partial: bool = False

    def name_for(self, name: gbench.Name) -> str | None:
        if self.when is not None and not self.when(name):
            return None
        args = []
        for k in self.keep:
            if isinstance(k, int):
                v = name.arg(k)
                if v is None:
                    return None
                args.append(("", v))
            else:
                v = name.arg(k)
                if v is not None:
                    args.append((k, v))
        return name.with_args(self.family, args).full


@dataclass(frozen=True)
class Rule:
    """A family of our code and its references; the first is the primary
    one (history headlines, charts); every one is checked by the gate."""

    family: str
    refs: tuple[Ref, ...]
    gate: bool = True  # False: third-party mechanism, reported only
    label: str = ""


def _spin(zero: bool):
    def pred(n: gbench.Name) -> bool:
        s = n.arg("spin_us", "0")
        try:
            return (float(s) == 0) == zero
        except ValueError:
            return False
    return pred


def _ours(n: gbench.Name) -> bool:
    # CPython's Connection does not grow its pipe: no grown row in its run.
    return n.prefix == "BM_"


_BYTES = ("bytes",)
_THROUGHPUT_REFS = (
    Ref("MemcpyThroughput", _BYTES, note="memcpy of the same size"),
    Ref("RawPipeThroughput", _BYTES, note="raw pipe of the same size"),
)
_PINGPONG_REFS = (
    Ref("RawFutexPingPong", (), _spin(True), note="futex round trip (block only)"),
    Ref("RawSpinPingPong", (), _spin(False), note="spin round trip (spin_us>0)"),
)
_RING_REFS = (
    Ref("RawRingThroughput", _BYTES, note="raw shared-memory ring of the same size"),
    Ref("MemcpyThroughput", _BYTES, note="memcpy of the same size"),
)
_SERIAL_REF = Ref("SerialMap", (0, "items"), note="serial map of the same workload")
_SERIAL = (_SERIAL_REF,)


# The pool's raw limit: its design in the barest form (forked workers over
# SPSC rings, f inlined, output reused), as the raw pipe is Pipe's. Its rows
# (one workload, some sizes, numeric chunksizes) are those bench/pool.cc
# registers.
_RAW_RING = Ref("RawRingPoolMap", (0, "items", "chunksize", "workers"),
                note="raw ring pool, same shape", partial=True)

RULES: tuple[Rule, ...] = (
    # fork family
    Rule("ProcessStartJoin", (Ref("ForkExitWait", ("rss_mib",)),),
         label="mp::Process start+join / fork+_exit+waitpid"),
    # ipc family: throughput
    Rule("PipeThroughput", (Ref("RawPipeThroughput", _BYTES),
                            Ref("RawPipeGrownThroughput", _BYTES, _ours,
                                note="raw pipe grown as mp::Pipe grows its own"),
                            Ref("RawPipeFramedThroughput", _BYTES, _ours,
                                note="raw length-prefixed loop on a grown pipe: "
                                     "what any framing costs")),
         label="mp pipe / raw pipe (throughput)"),
    Rule("SpscRingThroughput", _RING_REFS, label="SpscRing / raw ring (throughput)"),
    Rule("SpscRingLoanThroughput", _RING_REFS,
         label="SpscRing loan+view / raw ring (throughput)"),
    Rule("QueueThroughput", _THROUGHPUT_REFS, label="Queue / memcpy"),
    Rule("JoinableQueueThroughput", _THROUGHPUT_REFS, label="JoinableQueue / memcpy"),
    Rule("ChannelThroughput", _THROUGHPUT_REFS, label="Channel / memcpy"),
    Rule("RingChannelThroughput", _THROUGHPUT_REFS, label="RingChannel / memcpy"),
    # Several producer and consumer processes against the single-pair
    # limits of the same message size.
    Rule("QueueMpmcThroughput", _RING_REFS[:1] + _THROUGHPUT_REFS[1:],
         label="Queue PxC / raw ring (throughput)"),
    # One copy at most (the producer filling the slot): memcpy is the limit,
    # and memcpy into as many slots in turn the limit with the ring's cache
    # footprint.
    Rule("RingChannelLoanThroughput",
         _RING_REFS[1:] + (Ref("MemcpySlotsThroughput", ("bytes", "slots"),
                               note="memcpy into as many slots in turn: the "
                                    "ring's cache footprint"),),
         label="RingChannel loan+view / memcpy"),
    Rule("BoostMqThroughput", _THROUGHPUT_REFS, gate=False,
         label="Boost message_queue / memcpy"),
    # ipc family: latency
    Rule("PipePingPong", (Ref("RawPipePingPong", _BYTES),
                          Ref("RawPipeGrownPingPong", _BYTES, _ours,
                              note="raw pipe grown as mp::Pipe grows its own")),
         label="mp pipe / raw pipe (round trip)"),
    Rule("SpscRingPingPong",
         (Ref("RawRingPingPong", _BYTES, _spin(False),
              note="raw spinning ring (spin_us>0)"),) + _PINGPONG_REFS,
         label="SpscRing / raw ring, futex or spin (round trip)"),
    Rule("QueuePingPong", _PINGPONG_REFS, label="Queue / raw futex or spin (round trip)"),
    Rule("ChannelPingPong", _PINGPONG_REFS, label="Channel / raw futex or spin (round trip)"),
    Rule("BoostMqPingPong", (Ref("RawFutexPingPong", ()),), gate=False,
         label="Boost message_queue / raw futex (round trip)"),
    # pool family
    Rule("PoolMap", (_SERIAL_REF, _RAW_RING), label="Pool.map / serial"),
    # The dispatch cost alone (the caller's buffer reused) against the limit.
    Rule("PoolMapInto", (_RAW_RING, _SERIAL_REF), label="Pool.map_into / raw ring pool"),
    Rule("PoolImapUnordered", _SERIAL, label="Pool.imap_unordered / serial"),
    Rule("ForkMap", _SERIAL, label="fork-per-chunk map / serial"),
    # Threads against processes with one design: the same rings.
    Rule("ThreadPoolMap", (_SERIAL_REF, _RAW_RING), label="thread pool map / serial"),
)

# Our code with no raw counterpart in the run: the noise-robust comparison
# divides their change by the machine factor (median change of every
# benchmark) instead of by a reference.
MACHINE_NORMALISED: frozenset[str] = frozenset({
    "PoolCreate", "PoolTeardown", "ApplyAsyncRoundTrip", "FloatChannel",
})

# Only these prefixes are gated: the Python reference measures CPython.
GATED_PREFIXES: tuple[str, ...] = ("BM_",)

# Instances reported but never gated (regexes on the base name), for
# benchmarks known to be too unstable on the CI machines to gate. The
# run-to-run noise of a baseline pooled from several runs is the first line
# of defence (see scripts/baseline.py); this is the explicit second one.
#
# Shared-memory throughput (Queue, JoinableQueue, Channel, RingChannel,
# SpscRing): on the 2-vCPU CI VM, how fast a producer fills a shared ring against how fast
# the consumer drains it swings from one run to the next far beyond its
# repetitions' spread (measured: JoinableQueueThroughput/bytes:4096 2.4x
# slower, the Queue family 12-18% slower as a whole, between two
# back-to-back quick runs of one build), and three baseline runs do not see
# the whole range. They stay in every table, chart and history; the same
# code paths are gated through QueuePingPong and ChannelPingPong, whose
# round trips do not depend on that race.
UNGATED_INSTANCES: tuple[str, ...] = (
    r"^BM_(Joinable)?QueueThroughput/",
    r"^BM_(Ring)?ChannelThroughput/",
    # The same producer/consumer race, on mp::SpscRing; gated through
    # SpscRingPingPong.
    r"^BM_SpscRing(Loan)?Throughput/",
    # The same race, several processes a side (Queue), or large slots
    # handed over (RingChannel loans).
    r"^BM_QueueMpmcThroughput/",
    r"^BM_RingChannelLoanThroughput/",
)

# Metrics reported but never gated: a 99th percentile of a round trip on a
# shared VM is set by the neighbours' bursts (it moved 16% between two runs
# of one build), not by our code; the median (p50_ns) and time are gated.
UNGATED_METRICS: tuple[str, ...] = ("p99_ns",)

# Counters compared as bench/reference ratios in noise-robust mode besides
# time. Rates (bytes_per_second, items_per_second) are time seen upside down
# and `speedup` is already a ratio to serial, so they are left out.
RATIO_COUNTERS: tuple[str, ...] = ("p50_ns", "p99_ns")

_BY_FAMILY = {r.family: r for r in RULES}


def rule_for(name: str) -> Rule | None:
    return _BY_FAMILY.get(gbench.parse_name(name).family)


def references(name: str, has: Callable[[str], bool] | None = None
               ) -> list[tuple[Ref, str]]:
    """[(Ref, reference benchmark name)] for `name`; [] when it has none.
    Names are base names (no /real_time). `has` (e.g. a run's `has`) says
    which benchmarks the run holds: a partial Ref whose row it lacks is
    left out. Without it, every Ref that applies by name is listed."""
    n = gbench.parse_name(name)
    rule = _BY_FAMILY.get(n.family)
    if rule is None:
        return []
    out = []
    for ref in rule.refs:
        r = ref.name_for(n)
        if r is not None and not (ref.partial and has is not None and not has(r)):
            out.append((ref, r))
    return out


def primary_reference(name: str, has: Callable[[str], bool] | None = None) -> str | None:
    refs = references(name, has)
    return refs[0][1] if refs else None


def is_gated(name: str) -> bool:
    """True for our own code under the gate: a BM_ benchmark whose family has
    a gated rule or is machine-normalised."""
    n = gbench.parse_name(name)
    if n.prefix not in GATED_PREFIXES:
        return False
    if any(re.search(p, gbench.base_name(name)) for p in UNGATED_INSTANCES):
        return False
    rule = _BY_FAMILY.get(n.family)
    if rule is not None:
        return rule.gate
    return n.family in MACHINE_NORMALISED


def is_machine_normalised(name: str) -> bool:
    return gbench.parse_name(name).family in MACHINE_NORMALISED


def headline_families() -> list[Rule]:
    """The headline ratios of the history: one per rule, primary reference,
    geometric mean over the family's instances in a run."""
    return list(RULES)
