#!/usr/bin/python3
"""The seeds' experiments in CPython's multiprocessing, as Google Benchmark JSON.

Runs, with the ``fork`` start method and Debian's /usr/bin/python3 (standard
library only), the same experiments as our C++ benchmark families, and writes
a JSON file in Google Benchmark's shape, so that every results script reads it
with no special case:

* process cost: ``Process(target=noop).start(); join()`` and raw
  ``os.fork()``/``os._exit``/``os.waitpid``, also with 64 and 512 MiB of
  touched parent memory (``rss_mib:N``); and the same start+join under each
  start method (``start:fork|forkserver|spawn``, through
  ``multiprocessing.get_context(method)``) with 0 to 2048 MiB;
* pipes: ``Pipe(duplex=False)`` ``send_bytes``/``recv_bytes`` throughput and a
  ping-pong;
* ``Queue`` and ``JoinableQueue`` throughput (sentinel end) and a ping-pong;
* the seed's ``FloatChannel`` (its ``send`` bug fixed) moving 100 000 doubles
  a message;
* ``Pool(W)`` creation under each start method with 0 or 2048 MiB of parent
  memory (``PyPoolCreate/start:M/workers:W/rss_mib:N``), and one map
  (``x * 2``, 10000 items, chunksize 64, 2 workers) under each
  (``PyPoolMap/double/.../start:M``);
* ``Pool.map``/``imap_unordered`` against built-in ``map`` for ``x * 2`` and
  for the SHA-512 of 64 KiB items (inherited and sent), with pool creation and
  teardown timed apart.

A peer and the benchmark run pinned to two CPUs, as in //bench:ipc
(MPBENCH_PIN=0 leaves them to the scheduler on both sides).

Names are our C++ names with ``Py`` instead of ``BM_`` and without the
``/real_time`` suffix: ``PyPipeThroughput/bytes:4096`` pairs with
``BM_PipeThroughput/bytes:4096/real_time``. Every time is real (wall-clock)
time, as on the C++ side.

Timing follows Google Benchmark: a benchmark is a function called with an
iteration count; peers (consumer processes, pools) are set up outside the timed
region; the count grows until one call runs for at least --min-time seconds,
and each further repetition runs that count again. Every workload checks its
result (the consumer received every message and byte, the map returned the
expected values, the digests equal a serial hashlib result); a failed check
is stored as Google Benchmark's ``error_occurred`` and makes the script exit
with status 1.

Usage:
  python_reference.py [--out FILE] [--quick] [--filter REGEX] [--list]
                      [--repetitions N] [--min-time S] [--max-bench-seconds S]
                      [--slow]
Full mode (the default): 3 repetitions of at least 0.3 s each, about 3
minutes on 2 cores; a benchmark whose repetitions would take more than 10 s
gets fewer (Pool.map of 1 000 000 items at chunksize 1 runs once, ~14 s);
imap_unordered over 1 000 000 items at chunksize 1 is left out unless --slow.
--quick: tiny counts and sizes, a few seconds, a smoke test (bazel test).
Under ``bazel run //scripts:python_reference`` the default output is
``results/runs/<stamp>-<commit>-<host>-python.json`` in the workspace.
"""

import argparse
import datetime
import hashlib
import json
import math
import mmap
import multiprocessing
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import time

CTX = multiprocessing.get_context("fork")

# Workload sizes, shared with the C++ families (see the name contract in
# scripts/side_by_side.py).
RSS_MIB = (0, 64, 512)
PIPE_THROUGHPUT_BYTES = (8, 64, 512, 4096, 65536, 1048576, 16777216)
PIPE_PINGPONG_BYTES = (8, 4096, 65536)
QUEUE_BYTES = (8, 64, 4096)  # 8: Python ints; 64 and 4096: bytes objects
FLOAT_CHANNEL_DOUBLES = 100000
MAP_ITEMS = (100, 10000, 1000000)
CHUNKSIZES = (1, 8, 64, 512, 4096, "default")
SHA_ITEMS = (64, 1024)
SHA_CHUNKSIZES = (1, 8, 64, "default")
SHA_BUFFER_BYTES = 64 * 1024
WORKERS = (2,)
# imap_unordered over this many items at chunksize 1 (its default) is left out
# of the full mode unless --slow: one repetition takes about 25 s here.
SLOW_IMAP_ITEMS = 1000000

QUICK_RSS_MIB = (0, 64)
# Parent memory for the per-start-method rows, as //bench:fork's
# BM_ProcessStartJoin/start:M/rss_mib:N.
START_RSS_MIB = (0, 64, 512, 2048)
START_METHODS = ("fork", "forkserver", "spawn")
# PyPoolCreate/start:M/workers:W/rss_mib:N and the one map workload run
# under each start method (items, chunksize, workers), as in bench/pool.cc.
START_WORKERS = (1, 2)
START_POOL_RSS_MIB = (0, 2048)
START_MAP = (10000, 64, 2)
QUICK_MAP_ITEMS = (100, 10000)
QUICK_MAP_CHUNKSIZES_LARGE = (64, 512, 4096, "default")  # for 10000 items
QUICK_SHA_ITEMS = (64,)

PEER_TIMEOUT_S = 120.0

FLOAT_CHANNEL_BUG_NOTE = (
    "The seed's published FloatChannel.send does `self.buffer_len = nitems`, "
    "which rebinds the attribute to a plain int in the sending process only; "
    "the shared Value stays 0, so recv() returns buffer[:0] and every message "
    "arrives empty. This reference uses `self.buffer_len.value = nitems`.")


# --------------------------------------------------------------------------
# Workload functions. Module-level so that Pool can pickle them by name;
# forked workers inherit _BUFFERS.

def noop():
    pass


def double(x):
    return x * 2


_BUFFERS = []   # 64 KiB buffers, built before any pool is created
_DIGESTS = []   # their SHA-512 digests, computed serially with hashlib


def sha512_inherited(i):
    return hashlib.sha512(_BUFFERS[i]).digest()


def sha512_sent(buf):
    return hashlib.sha512(buf).digest()


def ensure_buffers(count):
    """Builds `count` deterministic 64 KiB buffers and their serial digests."""
    if len(_BUFFERS) >= count:
        return
    rng = random.Random(20240601)
    _BUFFERS[:] = [rng.randbytes(SHA_BUFFER_BYTES) for _ in range(count)]
    _DIGESTS[:] = [hashlib.sha512(b).digest() for b in _BUFFERS]


# --------------------------------------------------------------------------
# Google Benchmark's State, for one call with a fixed iteration count.

class CheckFailed(Exception):
    pass


class State:
    def __init__(self, iterations):
        self.iterations = iterations
        self.real_ns = 0
        self.cpu_ns = 0
        self.items = None       # items processed in the timed region
        self.bytes = None       # bytes processed in the timed region
        self.counters = {}      # extra counters (p50_ns, p99_ns, ...)
        self.samples = None     # per-iteration latencies in ns (ping-pongs)
        self.check = None       # what was checked, when it passed
        self._t0 = self._c0 = None

    def resume(self):
        self._c0 = time.thread_time_ns()
        self._t0 = time.perf_counter_ns()

    def pause(self):
        t1 = time.perf_counter_ns()
        self.real_ns += t1 - self._t0
        self.cpu_ns += time.thread_time_ns() - self._c0

    # Set by --break-check (tests): every check of the benchmark fails.
    break_checks = False

    @staticmethod
    def expect(condition, message):
        if not condition:
            raise CheckFailed(message)
        if State.break_checks:
            raise CheckFailed("check forced to fail by --break-check")


def wait_for(conn, what):
    """Receives one object from `conn`, failing (not hanging) if the peer died."""
    if not conn.poll(PEER_TIMEOUT_S):
        raise CheckFailed(f"no {what} from the peer within {PEER_TIMEOUT_S} s")
    return conn.recv()


def pinned_cpus():
    """The two CPUs that a benchmark and its peer run on, as //bench:ipc's
    Placement picks them (the first two this process may use), or None when
    MPBENCH_PIN=0 or fewer than two are allowed: then the scheduler places
    them. The same placement on both sides keeps a row and its C++
    counterpart comparable (two processes on two cores)."""
    if os.environ.get("MPBENCH_PIN") == "0":
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def _pinned_peer(cpu, target, args):
    os.sched_setaffinity(0, {cpu})
    target(*args)


def start_peer(target, *args):
    """Starts a peer process; with pinned_cpus(), pins this process to the
    first CPU until join_peer (or the end of the benchmark: call() restores
    it too) and the peer to the second."""
    cpus = pinned_cpus()
    allowed = os.sched_getaffinity(0)
    if cpus is None:
        proc = CTX.Process(target=target, args=args, daemon=True)
    else:
        proc = CTX.Process(target=_pinned_peer,
                           args=(cpus[1], target, args), daemon=True)
        os.sched_setaffinity(0, {cpus[0]})
    proc.allowed = allowed
    proc.start()
    return proc


def join_peer(proc):
    try:
        proc.join(PEER_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise CheckFailed("peer process did not exit")
    finally:
        os.sched_setaffinity(0, proc.allowed)
    State.expect(proc.exitcode == 0, f"peer exited with {proc.exitcode}")


# --------------------------------------------------------------------------
# Process cost.

class Ballast:
    """Resident memory held by this process: every 4 KiB page written, huge
    pages refused, as in bench/ballast.cc."""

    def __init__(self):
        self.map = None
        self.mib = 0

    def hold(self, mib):
        if mib == self.mib:
            return
        if self.map is not None:
            self.map.close()
            self.map = None
        self.mib = 0
        if mib == 0:
            return
        size = mib << 20
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            m.madvise(mmap.MADV_NOHUGEPAGE)
        except (AttributeError, OSError):
            pass
        m[::mmap.PAGESIZE] = b"\x01" * (size // mmap.PAGESIZE)
        self.map, self.mib = m, mib


BALLAST = Ballast()


def vm_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bm_fork_exit_wait(state, rss_mib):
    BALLAST.hold(rss_mib)
    rss = vm_rss_mib()
    bad = 0
    state.resume()
    for _ in range(state.iterations):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            bad += 1
    state.pause()
    state.expect(bad == 0, f"{bad} children did not exit with status 0")
    state.items = state.iterations
    state.check = (f"ok: {state.iterations} children forked, exited 0 and "
                   f"reaped; parent VmRSS {rss:.0f} MiB")


def bm_process_start_join(state, rss_mib):
    bm_process_start_join_with(state, "fork", rss_mib)


def bm_process_start_join_with(state, method, rss_mib):
    """Start+join under `method`. A forkserver's server starts (once, outside
    the timing) before the ballast, as a program would start it early; it is
    a fresh interpreter either way, so the ballast is not in it."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        BALLAST.hold(0)
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    BALLAST.hold(rss_mib)
    rss = vm_rss_mib()
    bad = 0
    state.resume()
    for _ in range(state.iterations):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            bad += 1
    state.pause()
    state.expect(bad == 0, f"{bad} processes did not exit with 0")
    state.items = state.iterations
    state.check = (f"ok: {state.iterations} {method} Process(target=noop) "
                   f"started, joined, exitcode 0; parent VmRSS {rss:.0f} MiB")


# --------------------------------------------------------------------------
# Pipes.

def _pipe_consumer(r, w, ack, count, size):
    w.close()
    ack.send("ready")
    received = nbytes = bad = 0
    for _ in range(count):
        m = r.recv_bytes()
        received += 1
        nbytes += len(m)
        if len(m) != size:
            bad += 1
    ack.send((received, nbytes, bad))


def bm_pipe_throughput(state, size):
    r, w = CTX.Pipe(duplex=False)
    ack_r, ack_w = CTX.Pipe(duplex=False)
    peer = start_peer(_pipe_consumer, r, w, ack_w, state.iterations, size)
    r.close()
    ack_w.close()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    n = state.iterations
    try:
        wait_for(ack_r, "ready")
        state.resume()
        for _ in range(n):
            w.send_bytes(payload)
        received, nbytes, bad = wait_for(ack_r, "count")
        state.pause()
    finally:
        w.close()
    join_peer(peer)
    state.expect(received == n and nbytes == n * size and bad == 0,
                 f"consumer got {received}/{n} messages, {nbytes}/{n * size} "
                 f"bytes, {bad} of a wrong size")
    state.items = n
    state.bytes = n * size
    state.check = (f"ok: consumer received {received} messages, "
                   f"{nbytes} bytes, every one {size} bytes")


def _pipe_echo(req_r, req_w, rep_r, rep_w, count):
    req_w.close()
    rep_r.close()
    for _ in range(count + 1):  # one warm-up round trip
        rep_w.send_bytes(req_r.recv_bytes())


def bm_pipe_ping_pong(state, size):
    # Two one-way pipes: on Linux, Pipe(duplex=True) is a socketpair, and the
    # C++ side measures pipes.
    req_r, req_w = CTX.Pipe(duplex=False)
    rep_r, rep_w = CTX.Pipe(duplex=False)
    peer = start_peer(_pipe_echo, req_r, req_w, rep_r, rep_w, state.iterations)
    req_r.close()
    rep_w.close()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    n = state.iterations
    samples = [0] * n
    clock = time.perf_counter_ns
    bad = 0
    req_w.send_bytes(payload)
    reply = rep_r.recv_bytes()  # warm-up
    state.resume()
    for i in range(n):
        t0 = clock()
        req_w.send_bytes(payload)
        reply = rep_r.recv_bytes()
        samples[i] = clock() - t0
        if len(reply) != size:
            bad += 1
    state.pause()
    req_w.close()
    join_peer(peer)
    state.expect(bad == 0 and reply == payload,
                 f"{bad} replies of a wrong size, last equal: {reply == payload}")
    state.items = n
    state.bytes = 2 * n * size
    state.samples = samples
    state.check = (f"ok: {n} round trips of {size} bytes each way, every "
                   f"reply {size} bytes, last reply equal to the request")


def _read_exactly(fd, view):
    """Fills `view` from `fd` with os.readv (no allocation); returns the
    number of bytes read (short only at end of file)."""
    got = 0
    size = len(view)
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _raw_pipe_consumer(r, w, ack, count, size):
    os.close(w)
    ack.send("ready")
    view = memoryview(bytearray(size))
    received = nbytes = 0
    for _ in range(count):
        n = _read_exactly(r, view)
        nbytes += n
        received += n == size
    ack.send((received, nbytes, 0))


def bm_raw_pipe_throughput(state, size):
    r, w = os.pipe()
    ack_r, ack_w = CTX.Pipe(duplex=False)
    peer = start_peer(_raw_pipe_consumer, r, w, ack_w, state.iterations, size)
    os.close(r)
    ack_w.close()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    n = state.iterations
    write = os.write
    try:
        wait_for(ack_r, "ready")
        state.resume()
        if size <= 65536:
            for _ in range(n):
                if write(w, payload) != size:
                    raise CheckFailed("short write to a blocking pipe")
        else:
            for _ in range(n):
                _write_all(w, payload)
        received, nbytes, _ = wait_for(ack_r, "count")
        state.pause()
    finally:
        os.close(w)
    join_peer(peer)
    state.expect(received == n and nbytes == n * size,
                 f"consumer got {received}/{n} messages, {nbytes}/{n * size} "
                 f"bytes")
    state.items = n
    state.bytes = n * size
    state.check = (f"ok: consumer read {received} messages of {size} bytes, "
                   f"{nbytes} bytes")


def _raw_pipe_echo(req_r, req_w, rep_r, rep_w, count, size):
    os.close(req_w)
    os.close(rep_r)
    view = memoryview(bytearray(size))
    for _ in range(count + 1):  # one warm-up round trip
        if _read_exactly(req_r, view) != size:
            break
        _write_all(rep_w, view)


def bm_raw_pipe_ping_pong(state, size):
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    n = state.iterations
    peer = start_peer(_raw_pipe_echo, req_r, req_w, rep_r, rep_w, n, size)
    os.close(req_r)
    os.close(rep_w)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    buf = bytearray(size)
    view = memoryview(buf)
    samples = [0] * n
    clock = time.perf_counter_ns
    bad = 0
    _write_all(req_w, payload)
    _read_exactly(rep_r, view)  # warm-up
    state.resume()
    for i in range(n):
        t0 = clock()
        _write_all(req_w, payload)
        got = _read_exactly(rep_r, view)
        samples[i] = clock() - t0
        if got != size:
            bad += 1
    state.pause()
    os.close(req_w)
    os.close(rep_r)
    join_peer(peer)
    state.expect(bad == 0 and buf == payload,
                 f"{bad} short replies, last equal: {buf == payload}")
    state.items = n
    state.bytes = 2 * n * size
    state.samples = samples
    state.check = (f"ok: {n} round trips of {size} bytes each way, every "
                   f"reply {size} bytes, last reply equal to the request")


# --------------------------------------------------------------------------
# Queues. The consumer ends at the None sentinel, as in the seed.

def _queue_payload(size):
    """bytes:8 sends Python ints (the seed's items); larger sizes send bytes."""
    if size == 8:
        return None
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def _queue_consumer(q, ack, joinable):
    warm = q.get()
    if joinable:
        q.task_done()
    ack.send(("ready", warm))
    count = total = 0
    while True:
        item = q.get()
        if item is None:
            if joinable:
                q.task_done()
            break
        count += 1
        total += item if isinstance(item, int) else len(item)
        if joinable:
            q.task_done()
    ack.send((count, total))


def _queue_throughput(state, size, joinable):
    q = CTX.JoinableQueue() if joinable else CTX.Queue()
    ack_r, ack_w = CTX.Pipe(duplex=False)
    peer = start_peer(_queue_consumer, q, ack_w, joinable)
    ack_w.close()
    payload = _queue_payload(size)
    n = state.iterations
    q.put("warm-up")  # starts the queue's feeder thread outside the timing
    wait_for(ack_r, "ready")
    if payload is None:
        state.resume()
        for i in range(n):
            q.put(i)
        if joinable:
            q.join()
        else:
            q.put(None)
            count, total = wait_for(ack_r, "count")
        state.pause()
        expected_total = n * (n - 1) // 2
        what = f"ints 0..{n - 1}, sum {expected_total}"
    else:
        state.resume()
        for _ in range(n):
            q.put(payload)
        if joinable:
            q.join()
        else:
            q.put(None)
            count, total = wait_for(ack_r, "count")
        state.pause()
        expected_total = n * size
        what = f"{size}-byte bytes objects, {expected_total} bytes"
    if joinable:
        q.put(None)
        count, total = wait_for(ack_r, "count")
    join_peer(peer)
    q.close()
    q.join_thread()
    state.expect(count == n and total == expected_total,
                 f"consumer got {count}/{n} items, total {total} "
                 f"(expected {expected_total})")
    state.items = n
    state.bytes = n * size
    ended = "q.join() after every task_done()" if joinable else "None sentinel"
    state.check = f"ok: consumer received {count} {what}; ended by {ended}"


def bm_queue_throughput(state, size):
    _queue_throughput(state, size, joinable=False)


def bm_joinable_queue_throughput(state, size):
    _queue_throughput(state, size, joinable=True)


def _queue_echo(req, rep):
    while True:
        item = req.get()
        if item is None:
            break
        rep.put(item)


def bm_queue_ping_pong(state, size):
    req, rep = CTX.Queue(), CTX.Queue()
    peer = start_peer(_queue_echo, req, rep)
    payload = _queue_payload(size)
    n = state.iterations
    samples = [0] * n
    clock = time.perf_counter_ns
    bad = 0
    req.put(0 if payload is None else payload)
    rep.get()  # warm-up: both feeder threads running
    state.resume()
    for i in range(n):
        item = i if payload is None else payload
        t0 = clock()
        req.put(item)
        back = rep.get()
        samples[i] = clock() - t0
        if back != item:
            bad += 1
    state.pause()
    req.put(None)
    join_peer(peer)
    for q in (req, rep):
        q.close()
        q.join_thread()
    state.expect(bad == 0, f"{bad} echoes differ from the request")
    state.items = n
    state.bytes = 2 * n * size
    state.samples = samples
    state.check = (f"ok: {n} round trips, every echo equal to its request "
                   f"({'int' if payload is None else f'{size}-byte bytes'})")


# --------------------------------------------------------------------------
# The seed's FloatChannel (seed 002), its send bug fixed.

class FloatChannel(object):

    def __init__(self, maxsize):
        self.buffer = CTX.RawArray('d', maxsize)
        self.buffer_len = CTX.Value('i')
        self.empty = CTX.Semaphore(1)
        self.full = CTX.Semaphore(0)

    def send(self, values):
        self.empty.acquire()              # Only proceed if buffer empty
        nitems = len(values)
        self.buffer_len.value = nitems    # Fixed: the seed rebinds buffer_len
        self.buffer[:nitems] = values     # Copy values into the buffer
        self.full.release()               # Signal that buffer is full

    def recv(self):
        self.full.acquire()               # Only proceed if buffer full
        values = self.buffer[:self.buffer_len.value]    # Copy values
        self.empty.release()              # Signal that buffer is empty
        return values


class PublishedFloatChannel(FloatChannel):
    """The seed's send, verbatim, to show what it delivers."""

    def send(self, values):
        self.empty.acquire()
        nitems = len(values)
        self.buffer_len = nitems
        self.buffer[:nitems] = values
        self.full.release()


def _float_consumer(count, ch, ack, expected_len, expected_sum):
    ack.send("ready")
    bad = 0
    lengths = 0
    for _ in range(count):
        values = ch.recv()
        lengths += len(values)
        if len(values) != expected_len or sum(values) != expected_sum:
            bad += 1
    ack.send((lengths, bad))


def bm_float_channel(state, doubles):
    ch = FloatChannel(doubles)
    ack_r, ack_w = CTX.Pipe(duplex=False)
    values = [float(x) for x in range(doubles)]
    expected_sum = math.fsum(values)
    n = state.iterations
    peer = start_peer(_float_consumer, n, ch, ack_w, doubles, expected_sum)
    ack_w.close()
    wait_for(ack_r, "ready")
    state.resume()
    for _ in range(n):
        ch.send(values)
    lengths, bad = wait_for(ack_r, "count")
    state.pause()
    join_peer(peer)
    state.expect(bad == 0 and lengths == n * doubles,
                 f"{bad} of {n} messages wrong; {lengths} values received "
                 f"(expected {n * doubles})")
    state.items = n
    state.bytes = n * doubles * 8
    state.check = (f"ok: consumer received {n} messages of {doubles} doubles, "
                   f"each summing to {expected_sum:.0f}")


def published_float_channel_delivers(doubles):
    """Sends one message through the seed's published FloatChannel and returns
    how many values the receiver got."""
    ch = PublishedFloatChannel(doubles)
    ack_r, ack_w = CTX.Pipe(duplex=False)

    def receive():
        ack_w.send(len(ch.recv()))

    peer = start_peer(receive)
    ch.send([float(x) for x in range(doubles)])
    got = wait_for(ack_r, "length")
    join_peer(peer)
    return got


# --------------------------------------------------------------------------
# Pools.

class Pools:
    """One long-lived pool per worker count for the map benchmarks, created
    (and warmed up) outside every timed region, after the SHA-512 buffers
    exist so that forked workers inherit them."""

    def __init__(self):
        self.pools = {}
        self.buffers_needed = 0

    def get(self, workers, method=None):
        key = (workers, method)
        if key not in self.pools:
            ensure_buffers(self.buffers_needed)
            ctx = CTX if method is None else multiprocessing.get_context(method)
            pool = ctx.Pool(workers)
            pool.map(double, range(4 * workers), 1)
            self.pools[key] = pool
        return self.pools[key]

    def close(self):
        for pool in self.pools.values():
            pool.close()
            pool.join()
        self.pools.clear()


POOLS = Pools()


def bm_pool_create(state, workers):
    bm_pool_create_with(state, "fork", workers, release_ballast=False)


def bm_pool_create_with(state, method, workers, release_ballast=True,
                        rss_mib=0):
    """Pool(workers) under `method` while the parent holds `rss_mib` MiB of
    ballast (released afterwards). A forkserver's server starts (once,
    outside the timing) before the ballast, as for Process."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        BALLAST.hold(0)
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    if release_ballast or rss_mib:
        BALLAST.hold(rss_mib)
    bad = 0
    for _ in range(state.iterations):
        state.resume()
        pool = ctx.Pool(workers)
        state.pause()
        if len(pool._pool) != workers:
            bad += 1
        pool.close()
        pool.join()
    if rss_mib:
        BALLAST.hold(0)
    state.expect(bad == 0, f"{bad} pools without {workers} workers")
    state.items = state.iterations
    state.check = (f"ok: {state.iterations} {method} Pool({workers}) "
                   f"constructed (closed and joined outside the timing)")


def bm_pool_teardown(state, workers):
    bad = 0
    for _ in range(state.iterations):
        pool = CTX.Pool(workers)
        pool.map(double, range(4 * workers), 1)  # workers up and idle
        procs = list(pool._pool)
        state.resume()
        pool.close()
        pool.join()
        state.pause()
        bad += sum(p.exitcode != 0 for p in procs)
    state.expect(bad == 0, f"{bad} workers did not exit with 0")
    state.items = state.iterations
    state.check = (f"ok: {state.iterations} Pool({workers}) closed and joined "
                   f"after one warm-up map; every worker exited 0")


def _map_job(workload, items):
    """Returns (function, inputs, expected results)."""
    if workload == "double":
        inputs = list(range(items))
        return double, inputs, [x * 2 for x in inputs]
    ensure_buffers(items)
    if workload == "sha512_inherited":
        return sha512_inherited, list(range(items)), _DIGESTS[:items]
    if workload == "sha512_sent":
        return sha512_sent, _BUFFERS[:items], _DIGESTS[:items]
    raise ValueError(workload)


def _describe_result(workload, items):
    if workload == "double":
        return f"{items} results equal to [x * 2 for x in range({items})]"
    return f"{items} digests equal to serial hashlib.sha512 digests"


def bm_serial_map(state, workload, items):
    fn, inputs, expected = _map_job(workload, items)
    result = None
    state.resume()
    for _ in range(state.iterations):
        result = list(map(fn, inputs))
    state.pause()
    state.expect(result == expected, "built-in map returned wrong results")
    state.items = state.iterations * items
    state.bytes = (state.iterations * items * SHA_BUFFER_BYTES
                   if workload != "double" else None)
    state.check = "ok: last map returned " + _describe_result(workload, items)


def bm_pool_map(state, workload, items, chunksize, workers, method=None):
    fn, inputs, expected = _map_job(workload, items)
    pool = POOLS.get(workers, method)
    kwargs = {} if chunksize == "default" else {"chunksize": chunksize}
    result = None
    state.resume()
    for _ in range(state.iterations):
        result = pool.map(fn, inputs, **kwargs)
    state.pause()
    state.expect(result == expected, "Pool.map returned wrong results")
    state.items = state.iterations * items
    state.bytes = (state.iterations * items * SHA_BUFFER_BYTES
                   if workload != "double" else None)
    state.check = "ok: last Pool.map returned " + _describe_result(workload,
                                                                    items)


def bm_pool_imap_unordered(state, workload, items, chunksize, workers):
    fn, inputs, expected = _map_job(workload, items)
    pool = POOLS.get(workers)
    kwargs = {} if chunksize == "default" else {"chunksize": chunksize}
    result = None
    state.resume()
    for _ in range(state.iterations):
        result = list(pool.imap_unordered(fn, inputs, **kwargs))
    state.pause()
    if workload == "double":
        ok = len(result) == items and sum(result) == sum(expected)
    else:
        ok = sorted(result) == sorted(expected)
    state.expect(ok, "imap_unordered returned wrong results")
    state.items = state.iterations * items
    state.bytes = (state.iterations * items * SHA_BUFFER_BYTES
                   if workload != "double" else None)
    state.check = ("ok: last imap_unordered returned " +
                   _describe_result(workload, items) + " (in any order)")


# --------------------------------------------------------------------------
# The registry.

class Bench:
    def __init__(self, name, fn, params, unit, workload, max_iterations=None):
        self.name = name
        self.fn = fn
        self.params = params
        self.unit = unit
        self.workload = workload
        self.max_iterations = max_iterations

    @property
    def family(self):
        return self.name.split("/", 1)[0]


def registry(quick, slow=False):
    """The benchmarks to run, and the names left out (with why)."""
    benches = []
    skipped = {}

    def add(*args, **kwargs):
        benches.append(Bench(*args, **kwargs))

    rss_sizes = QUICK_RSS_MIB if quick else RSS_MIB
    for fam, fn, what in (
            ("PyForkExitWait", bm_fork_exit_wait,
             "os.fork(); child os._exit(0); parent os.waitpid(pid, 0)"),
            ("PyProcessStartJoin", bm_process_start_join,
             "Process(target=noop).start(); join() (fork start method)")):
        per = {"processes": 1}
        add(fam, fn, {"rss_mib": 0}, "us",
            {"definition": what + "; no ballast", "per_iteration": per})
        for mib in rss_sizes:
            add(f"{fam}/rss_mib:{mib}", fn, {"rss_mib": mib}, "us",
                {"definition": f"{what}; parent holds {mib} MiB of extra "
                               f"private memory, every 4 KiB page written "
                               f"(MADV_NOHUGEPAGE)",
                 "per_iteration": per})

    for method in START_METHODS:
        what = (f"get_context({method!r}).Process(target=noop).start(); "
                f"join()")
        for mib in (QUICK_RSS_MIB if quick else START_RSS_MIB):
            add(f"PyProcessStartJoin/start:{method}/rss_mib:{mib}",
                (lambda state, rss_mib, method=method:
                 bm_process_start_join_with(state, method, rss_mib)),
                {"rss_mib": mib}, "us",
                {"definition": f"{what}; parent holds {mib} MiB of extra "
                               f"private memory, every 4 KiB page written "
                               f"(MADV_NOHUGEPAGE)",
                 "per_iteration": {"processes": 1}},
                max_iterations=3 if quick else None)

    for size in PIPE_THROUGHPUT_BYTES:
        add(f"PyPipeThroughput/bytes:{size}", bm_pipe_throughput,
            {"size": size}, "ns",
            {"definition": "Pipe(duplex=False); producer (benchmark process) "
                           "send_bytes one message per iteration; consumer "
                           "child (started before the timing) recv_bytes "
                           "every message and reports the count, which "
                           "ends the timing",
             "per_iteration": {"messages": 1, "bytes": size}},
            max_iterations=(4 if quick else 64) if size >= 1 << 24 else None)
    for size in PIPE_PINGPONG_BYTES:
        add(f"PyPipePingPong/bytes:{size}", bm_pipe_ping_pong, {"size": size},
            "ns",
            {"definition": "two Pipe(duplex=False) (a duplex Pipe is a "
                           "socketpair on Linux); send_bytes request, echo "
                           "child recv_bytes/send_bytes, recv_bytes reply; "
                           "time = mean round trip, p50_ns/p99_ns per round "
                           "trip",
             "per_iteration": {"round_trips": 1, "bytes": 2 * size}})

    for size in PIPE_THROUGHPUT_BYTES:
        add(f"PyRawPipeThroughput/bytes:{size}", bm_raw_pipe_throughput,
            {"size": size}, "ns",
            {"definition": "os.pipe(); producer os.write()s one message per "
                           "iteration; consumer child os.readv()s exactly "
                           "that many bytes into a reused bytearray and "
                           "reports the count, which ends the timing (the "
                           "cheapest pipe loop Python has: no framing, no "
                           "allocation)",
             "per_iteration": {"messages": 1, "bytes": size}},
            max_iterations=(4 if quick else 64) if size >= 1 << 24 else None)
    for size in PIPE_PINGPONG_BYTES:
        add(f"PyRawPipePingPong/bytes:{size}", bm_raw_pipe_ping_pong,
            {"size": size}, "ns",
            {"definition": "two os.pipe()s; os.write request, echo child "
                           "os.readv/os.write, os.readv reply into a reused "
                           "bytearray; time = mean round trip, p50_ns/p99_ns "
                           "per round trip",
             "per_iteration": {"round_trips": 1, "bytes": 2 * size}})

    for size in QUEUE_BYTES:
        item = ("Python ints 0, 1, 2, ... (bytes:8 pairs with the C++ 8-byte "
                "payload)" if size == 8 else f"a {size}-byte bytes object")
        add(f"PyQueueThroughput/bytes:{size}", bm_queue_throughput,
            {"size": size}, "ns",
            {"definition": f"Queue(); put({item}) per iteration; consumer "
                           f"child get()s until the None sentinel and "
                           f"reports count and total, which ends the timing",
             "per_iteration": {"messages": 1, "bytes": size}})
        add(f"PyJoinableQueueThroughput/bytes:{size}",
            bm_joinable_queue_throughput, {"size": size}, "ns",
            {"definition": f"JoinableQueue(); put({item}) per iteration; "
                           f"consumer child get() + task_done(); the timing "
                           f"ends when the producer's join() returns; a None "
                           f"sentinel then ends the consumer, which reports "
                           f"count and total",
             "per_iteration": {"messages": 1, "bytes": size}})
        add(f"PyQueuePingPong/bytes:{size}", bm_queue_ping_pong,
            {"size": size}, "ns",
            {"definition": f"two Queue()s; put({item}), echo child get() and "
                           f"put() it back, get() the reply; time = mean "
                           f"round trip, p50_ns/p99_ns per round trip",
             "per_iteration": {"round_trips": 1, "bytes": 2 * size}})

    add(f"PyFloatChannel/doubles:{FLOAT_CHANNEL_DOUBLES}", bm_float_channel,
        {"doubles": FLOAT_CHANNEL_DOUBLES}, "us",
        {"definition": "seed 002's FloatChannel (RawArray('d') + Value('i') + "
                       "two Semaphores), send bug fixed; producer sends the "
                       "same list of 100000 floats per iteration; consumer "
                       "child recv()s every message and checks its length "
                       "and sum",
         "per_iteration": {"messages": 1, "doubles": FLOAT_CHANNEL_DOUBLES,
                           "bytes": 8 * FLOAT_CHANNEL_DOUBLES},
         "note": FLOAT_CHANNEL_BUG_NOTE},
        max_iterations=10 if quick else None)

    for w in WORKERS:
        add(f"PyPoolCreate/workers:{w}", bm_pool_create, {"workers": w}, "us",
            {"definition": f"Pool({w}) constructor (forks {w} workers, "
                           f"starts 3 handler threads); close()+join() "
                           f"outside the timing",
             "per_iteration": {"pools": 1, "workers": w}},
            max_iterations=5 if quick else None)
        add(f"PyPoolTeardown/workers:{w}", bm_pool_teardown, {"workers": w},
            "us",
            {"definition": f"Pool({w}).close(); join() after one warm-up map; "
                           f"construction outside the timing",
             "per_iteration": {"pools": 1, "workers": w}},
            max_iterations=5 if quick else None)

    # BM_PoolCreate/start:M/workers:W/rss_mib:N and BM_PoolMap/.../start:M.
    for method in START_METHODS:
        for w in ((2,) if quick else START_WORKERS):
            for mib in ((0,) if quick else START_POOL_RSS_MIB):
                add(f"PyPoolCreate/start:{method}/workers:{w}/rss_mib:{mib}",
                    (lambda state, workers, rss_mib, method=method:
                     bm_pool_create_with(state, method, workers,
                                         rss_mib=rss_mib)),
                    {"workers": w, "rss_mib": mib}, "us",
                    {"definition": f"get_context({method!r}).Pool({w}) "
                                   f"constructor while the parent holds "
                                   f"{mib} MiB of extra private memory, "
                                   f"every 4 KiB page written; "
                                   f"close()+join() outside the timing",
                     "per_iteration": {"pools": 1, "workers": w}},
                    max_iterations=3 if quick else None)
    for method in START_METHODS:
        n, c, w = START_MAP
        add(f"PyPoolMap/double/items:{n}/chunksize:{c}/workers:{w}/"
            f"start:{method}",
            (lambda state, workload, items, chunksize, workers, method=method:
             bm_pool_map(state, workload, items, chunksize, workers, method)),
            {"workload": "double", "items": n, "chunksize": c, "workers": w},
            "ms",
            {"definition": f"pool.map(f, inputs, chunksize={c}) on a "
                           f"get_context({method!r}).Pool({w}) created "
                           f"outside the timing, f: x * 2 over "
                           f"list(range({n}))",
             "per_iteration": {"items": n}},
            max_iterations=3 if quick else None)

    map_items = QUICK_MAP_ITEMS if quick else MAP_ITEMS
    sha_items = QUICK_SHA_ITEMS if quick else SHA_ITEMS
    jobs = [("double", n, CHUNKSIZES) for n in map_items]
    jobs += [(wl, n, SHA_CHUNKSIZES)
             for wl in ("sha512_inherited", "sha512_sent") for n in sha_items]
    defs = {
        "double": "x * 2 over list(range(N))",
        "sha512_inherited": "hashlib.sha512(buffers[i]).digest() over "
                            "list(range(N)); buffers: N distinct 64 KiB "
                            "bytes built before the pool, inherited by the "
                            "forked workers",
        "sha512_sent": "hashlib.sha512(item).digest() over N distinct 64 KiB "
                       "bytes items, pickled to the workers",
    }
    for wl, n, chunks in jobs:
        per = {"items": n}
        if wl != "double":
            per["bytes_hashed"] = n * SHA_BUFFER_BYTES
        add(f"PySerialMap/{wl}/items:{n}", bm_serial_map,
            {"workload": wl, "items": n}, "ms",
            {"definition": f"list(map(f, inputs)), f: {defs[wl]}",
             "per_iteration": per})
    for wl, n, chunks in jobs:
        per = {"items": n}
        if wl != "double":
            per["bytes_hashed"] = n * SHA_BUFFER_BYTES
        for w in WORKERS:
            for c in chunks:
                if quick and n > 1000 and c not in QUICK_MAP_CHUNKSIZES_LARGE:
                    continue
                cdef = ("Pool.map's default, ceil(N / (4 * workers))"
                        if c == "default" else str(c))
                add(f"PyPoolMap/{wl}/items:{n}/chunksize:{c}/workers:{w}",
                    bm_pool_map,
                    {"workload": wl, "items": n, "chunksize": c,
                     "workers": w}, "ms",
                    {"definition": f"pool.map(f, inputs, chunksize={cdef}) "
                                   f"on a Pool({w}) created outside the "
                                   f"timing, f: {defs[wl]}",
                     "per_iteration": per})
                idef = ("imap_unordered's default, 1" if c == "default"
                        else str(c))
                name = (f"PyPoolImapUnordered/{wl}/items:{n}/chunksize:{c}/"
                        f"workers:{w}")
                if n >= SLOW_IMAP_ITEMS and c in (1, "default") and not slow:
                    skipped[name] = (
                        "about 25 s a repetition on 2 cores (one task per "
                        "item); run with --slow")
                    continue
                add(f"PyPoolImapUnordered/{wl}/items:{n}/chunksize:{c}/"
                    f"workers:{w}", bm_pool_imap_unordered,
                    {"workload": wl, "items": n, "chunksize": c,
                     "workers": w}, "ms",
                    {"definition": f"list(pool.imap_unordered(f, inputs, "
                                   f"chunksize={idef})) on a Pool({w}) "
                                   f"created outside the timing, f: "
                                   f"{defs[wl]}",
                     "per_iteration": per})
    return benches, skipped


# --------------------------------------------------------------------------
# The runner: Google Benchmark's iteration-count search and repetitions.

UNIT_NS = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}


def call(bench, iterations):
    state = State(iterations)
    allowed = os.sched_getaffinity(0)
    try:
        bench.fn(state, **bench.params)
    finally:
        os.sched_setaffinity(0, allowed)  # start_peer's pin ends here
    return state


def percentile(sorted_samples, q):
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_samples) - 1,
                   math.ceil(q / 100 * len(sorted_samples)) - 1))
    return float(sorted_samples[k])


def entry_for(bench, state, repetitions, index, family_index, instance_index):
    scale = UNIT_NS[bench.unit]
    seconds = state.real_ns / 1e9
    e = {
        "name": bench.name,
        "family_index": family_index,
        "per_family_instance_index": instance_index,
        "run_name": bench.name,
        "run_type": "iteration",
        "repetitions": repetitions,
        "repetition_index": index,
        "threads": 1,
        "iterations": state.iterations,
        "real_time": state.real_ns / state.iterations / scale,
        "cpu_time": state.cpu_ns / state.iterations / scale,
        "time_unit": bench.unit,
    }
    if state.bytes is not None:
        e["bytes_per_second"] = state.bytes / seconds
    if state.items is not None:
        e["items_per_second"] = state.items / seconds
    if state.samples:
        s = sorted(state.samples)
        e["p50_ns"] = percentile(s, 50)
        e["p99_ns"] = percentile(s, 99)
    e.update(state.counters)
    e["label"] = state.check
    return e


def error_entry(bench, message, family_index, instance_index):
    return {
        "name": bench.name,
        "family_index": family_index,
        "per_family_instance_index": instance_index,
        "run_name": bench.name,
        "run_type": "iteration",
        "repetitions": 1,
        "repetition_index": 0,
        "threads": 1,
        "error_occurred": True,
        "error_message": message,
        "iterations": 0,
        "real_time": 0.0,
        "cpu_time": 0.0,
        "time_unit": bench.unit,
    }


STANDARD_FIELDS = {"name", "family_index", "per_family_instance_index",
                   "run_name", "run_type", "repetitions", "repetition_index",
                   "threads", "iterations", "time_unit", "label",
                   "aggregate_name", "aggregate_unit", "error_occurred",
                   "error_message"}


def aggregates(entries):
    """mean, median, stddev and cv entries, as Google Benchmark 1.7 writes."""
    first = entries[0]
    values = [k for k, v in first.items()
              if k not in STANDARD_FIELDS and isinstance(v, (int, float))]
    out = []
    for agg in ("mean", "median", "stddev", "cv"):
        a = {k: first[k] for k in ("family_index", "per_family_instance_index",
                                   "run_name")}
        a.update(name=f"{first['name']}_{agg}", run_type="aggregate",
                 repetitions=len(entries), threads=1, aggregate_name=agg,
                 aggregate_unit="percentage" if agg == "cv" else "time",
                 iterations=len(entries))
        a = {"name": a.pop("name"), **a}
        for k in values:
            xs = [e[k] for e in entries]
            mean = statistics.fmean(xs)
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            a[k] = {"mean": mean, "median": statistics.median(xs),
                    "stddev": sd,
                    "cv": sd / mean if mean else 0.0}[agg]
        a["time_unit"] = first["time_unit"]
        # Keep Google Benchmark's field order: time_unit after cpu_time.
        out.append(_reorder(a))
    return out


def _reorder(e):
    head = [k for k in e if k not in ("real_time", "cpu_time", "time_unit")]
    counters = [k for k in head if k not in STANDARD_FIELDS]
    fixed = [k for k in head if k in STANDARD_FIELDS]
    order = fixed + ["real_time", "cpu_time", "time_unit"] + counters
    return {k: e[k] for k in order}


def run_bench(bench, opts, family_index, instance_index, log):
    """Returns (entries, check) for one benchmark."""
    State.break_checks = bool(opts.break_check and
                              re.search(opts.break_check, bench.name))
    try:
        iterations = 1
        cap = bench.max_iterations or opts.max_iterations
        while True:
            state = call(bench, iterations)
            seconds = state.real_ns / 1e9
            if seconds >= opts.min_time or iterations >= cap:
                break
            multiplier = opts.min_time * 1.4 / max(seconds, 1e-9)
            if seconds / opts.min_time <= 0.1:
                multiplier = 10.0
            if multiplier <= 1.0:
                multiplier = 2.0
            iterations = min(max(round(multiplier * iterations),
                                 iterations + 1), cap)
        reps = opts.repetitions
        if seconds * reps > opts.max_bench_seconds:
            reps = max(1, int(opts.max_bench_seconds // max(seconds, 1e-9)))
        states = [state] + [call(bench, iterations) for _ in range(reps - 1)]
    except CheckFailed as e:
        BALLAST.hold(0)
        log(f"{bench.name:<60} ERROR: {e}")
        return [error_entry(bench, str(e), family_index, instance_index)], \
            {"status": "failed", "detail": str(e)}
    except Exception as e:  # noqa: BLE001 - reported like SkipWithError
        BALLAST.hold(0)
        msg = f"{type(e).__name__}: {e}"
        log(f"{bench.name:<60} ERROR: {msg}")
        return [error_entry(bench, msg, family_index, instance_index)], \
            {"status": "failed", "detail": msg}
    BALLAST.hold(0)  # kept across the calls of one benchmark, as in C++
    entries = [entry_for(bench, s, reps, i, family_index, instance_index)
               for i, s in enumerate(states)]
    for e in entries:
        log(console_line(e))
    if reps > 1:
        entries += aggregates(entries)
    return entries, {"status": "ok", "detail": states[-1].check,
                     "repetitions": reps, "iterations": iterations}


def human(x):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def console_line(e):
    extras = []
    if "bytes_per_second" in e:
        extras.append(f"bytes_per_second={human(e['bytes_per_second'])}/s")
    if "items_per_second" in e:
        extras.append(f"items_per_second={human(e['items_per_second'])}/s")
    for k in ("p50_ns", "p99_ns"):
        if k in e:
            extras.append(f"{k}={human(e[k])}")
    return (f"{e['name']:<60} {e['real_time']:>12.4g} {e['time_unit']:<2} "
            f"{e['iterations']:>9} " + " ".join(extras))


# --------------------------------------------------------------------------
# Context and output.

def host_context(opts, argv):
    ctx = {
        "date": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "host_name": socket.gethostname(),
        "executable": sys.executable + " " + os.path.abspath(__file__),
        "num_cpus": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "library_build_type": "python",
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "start_method": "fork",
        "mode": "quick" if opts.quick else "full",
        "min_time_s": opts.min_time,
        "repetitions": opts.repetitions,
        "max_bench_seconds": opts.max_bench_seconds,
        "argv": argv,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    ctx["mhz_per_cpu"] = round(float(line.split(":")[1]))
                    break
                if line.startswith("model name"):
                    ctx["cpu_model"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    ctx["kernel"] = platform.release()
    return ctx


def default_out():
    root = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    if not root:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        root = here if os.path.isdir(os.path.join(here, "results")) else "."
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y%m%dT%H%M%SZ")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip() or "nocommit"
    except (OSError, subprocess.SubprocessError):
        rev = "nocommit"
    host = socket.gethostname().split(".")[0]
    return os.path.join(root, "results", "runs",
                        f"{stamp}-{rev}-{host}-python.json")


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="JSON output file (default: "
                   "results/runs/<stamp>-python.json in the workspace)")
    p.add_argument("--quick", action="store_true",
                   help="tiny counts and sizes: a smoke test of every "
                        "family, not a measurement")
    p.add_argument("--filter", default="",
                   help="run only benchmarks whose name matches this regular "
                        "expression (re.search)")
    p.add_argument("--repetitions", type=int,
                   help="repetitions per benchmark (default 3; quick 2)")
    p.add_argument("--min-time", type=float,
                   help="seconds one repetition runs at least (default 0.3; "
                        "quick 0.005)")
    p.add_argument("--max-bench-seconds", type=float,
                   help="fewer repetitions (at least 1) for a benchmark whose "
                        "repetitions would take longer than this (default "
                        "10; quick 1)")
    p.add_argument("--max-iterations", type=int, default=10**9,
                   help=argparse.SUPPRESS)
    p.add_argument("--slow", action="store_true",
                   help="also run imap_unordered over 1000000 items at "
                        "chunksize 1 and default (about a minute more)")
    p.add_argument("--break-check", default="", help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true",
                   help="print the benchmark names and workloads, run nothing")
    opts = p.parse_args(argv)
    if opts.repetitions is None:
        opts.repetitions = 2 if opts.quick else 3
    if opts.min_time is None:
        opts.min_time = 0.005 if opts.quick else 0.3
    if opts.max_bench_seconds is None:
        opts.max_bench_seconds = 1.0 if opts.quick else 10.0
    if opts.repetitions < 1 or opts.min_time <= 0:
        p.error("--repetitions must be >= 1 and --min-time > 0")
    return opts


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    all_benches, skipped = registry(opts.quick, opts.slow)
    benches = [b for b in all_benches if re.search(opts.filter, b.name)]
    skipped = {n: why for n, why in skipped.items()
               if re.search(opts.filter, n)}
    if not benches:
        print(f"no benchmark matches {opts.filter!r}", file=sys.stderr)
        return 2
    if opts.list:
        for b in benches:
            print(f"{b.name}\n    {b.workload['definition']}")
        for name, why in skipped.items():
            print(f"{name}\n    (skipped: {why})")
        return 0

    def log(line):
        print(line, flush=True)

    context = host_context(opts, argv)
    context["workloads"] = {b.name: b.workload for b in benches}
    context["skipped"] = skipped
    context["notes"] = [
        "CPython multiprocessing reference (scripts/python_reference.py): "
        "names are the C++ names with Py for BM_; all times are real time.",
        "A benchmark whose repetitions would run longer than "
        f"{opts.max_bench_seconds:g} s gets fewer repetitions (at least 1); "
        "its entries' 'repetitions' field says how many.",
    ]
    if any(b.family == "PyFloatChannel" for b in benches):
        got = published_float_channel_delivers(FLOAT_CHANNEL_DOUBLES)
        context["notes"].append(FLOAT_CHANNEL_BUG_NOTE)
        context["published_float_channel"] = {
            "values_sent": FLOAT_CHANNEL_DOUBLES, "values_received": got}
        log(f"note: {FLOAT_CHANNEL_BUG_NOTE}")
        log(f"note: checked here: the published FloatChannel delivered {got} "
            f"of {FLOAT_CHANNEL_DOUBLES} values.")
        if got != 0:
            context["notes"].append(
                f"unexpected: the published FloatChannel delivered {got} "
                f"values")
    sha_items = [b.params["items"] for b in benches
                 if str(b.params.get("workload", "")).startswith("sha512")]
    POOLS.buffers_needed = max(sha_items, default=0)

    log(f"CPython {platform.python_version()} multiprocessing (fork), "
        f"{os.cpu_count()} CPUs, {context['mode']} mode: "
        f"min_time {opts.min_time:g} s, {opts.repetitions} repetitions")
    log("workloads:")
    for b in benches:
        log(f"  {b.name}: {b.workload['definition']}; per iteration "
            f"{json.dumps(b.workload['per_iteration'])}")
    for name, why in skipped.items():
        log(f"  {name}: skipped, {why}")
    log(f"{'Benchmark':<60} {'Time':>15} {'Iterations':>9}")
    started = time.monotonic()

    entries = []
    checks = {}
    family_index = {}
    instance = {}
    try:
        for b in benches:
            fi = family_index.setdefault(b.family, len(family_index))
            ii = instance.get(b.family, 0)
            instance[b.family] = ii + 1
            es, check = run_bench(b, opts, fi, ii, log)
            entries += es
            checks[b.name] = check
    finally:
        POOLS.close()
        BALLAST.hold(0)
    context["checks"] = checks
    context["elapsed_s"] = round(time.monotonic() - started, 1)

    out = opts.out or default_out()
    if not os.path.isabs(out) and os.environ.get("BUILD_WORKING_DIRECTORY"):
        # bazel run starts us in the runfiles tree; take relative paths from
        # where bazel was called.
        out = os.path.join(os.environ["BUILD_WORKING_DIRECTORY"], out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"context": context, "benchmarks": entries}, f, indent=2)
        f.write("\n")
    os.replace(tmp, out)
    failed = [n for n, c in checks.items() if c["status"] != "ok"]
    log(f"wrote {out}")
    if failed:
        log(f"FAILED checks: {', '.join(failed)}")
        return 1
    log(f"all {len(checks)} workload checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
