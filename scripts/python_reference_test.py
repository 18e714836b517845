"""Runs the Python reference in quick mode and checks what it writes: Google
Benchmark's JSON shape, the name contract with the C++ families, that the
shared loader (gbench) reads it with no special case, and that every
workload's result check passed. Also: a failed check exits non-zero."""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import gbench

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "python_reference.py")
TIME_UNITS = {"ns", "us", "ms", "s"}

# Every family and argument shape the quick mode must produce (the full mode
# runs more sizes of the same shapes).
EXPECTED = [
    r"PyForkExitWait",
    r"PyForkExitWait/rss_mib:0",
    r"PyForkExitWait/rss_mib:64",
    r"PyProcessStartJoin",
    r"PyProcessStartJoin/rss_mib:64",
    r"PyPipeThroughput/bytes:4096",
    r"PyPipeThroughput/bytes:1048576",
    r"PyPipeThroughput/bytes:16777216",
    r"PyPipePingPong/bytes:8",
    r"PyRawPipeThroughput/bytes:4096",
    r"PyRawPipePingPong/bytes:65536",
    r"PyQueueThroughput/bytes:(8|64|4096)",
    r"PyJoinableQueueThroughput/bytes:64",
    r"PyQueuePingPong/bytes:64",
    r"PyFloatChannel/doubles:100000",
    r"PyPoolCreate/workers:2",
    r"PyPoolCreate/start:(fork|forkserver|spawn)/workers:2/rss_mib:0",
    r"PyPoolMap/double/items:10000/chunksize:64/workers:2/"
    r"start:(fork|forkserver|spawn)",
    r"PyPoolTeardown/workers:2",
    r"PySerialMap/double/items:100",
    r"PySerialMap/sha512_inherited/items:64",
    r"PySerialMap/sha512_sent/items:64",
    r"PyPoolMap/double/items:100/chunksize:1/workers:2",
    r"PyPoolMap/double/items:100/chunksize:default/workers:2",
    r"PyPoolImapUnordered/double/items:100/chunksize:8/workers:2",
    r"PyPoolMap/sha512_inherited/items:64/chunksize:8/workers:2",
    r"PyPoolMap/sha512_sent/items:64/chunksize:default/workers:2",
]


def run_reference(*args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "py.json")
        proc = subprocess.run(
            [sys.executable, SCRIPT, "--out", out, *args],
            capture_output=True, text=True, timeout=55)
        data = None
        if os.path.exists(out):
            with open(out) as f:
                data = json.load(f)
            run = gbench.load_run(out)
        else:
            run = None
    return proc, data, run


class QuickRunTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.proc, cls.data, cls.loaded = run_reference("--quick")

    def test_exit_status_and_output(self):
        self.assertEqual(self.proc.returncode, 0,
                         self.proc.stdout[-3000:] + self.proc.stderr[-3000:])
        self.assertIsNotNone(self.data)
        self.assertIn("all", self.proc.stdout.splitlines()[-1])

    def test_context(self):
        c = self.data["context"]
        for key in ("date", "host_name", "num_cpus", "python_version",
                    "workloads", "checks", "notes"):
            self.assertIn(key, c)
        self.assertEqual(c["library_build_type"], "python")
        self.assertEqual(c["start_method"], "fork")
        self.assertEqual(c["mode"], "quick")
        # The seed's published FloatChannel delivers empty messages.
        self.assertEqual(c["published_float_channel"]["values_received"], 0)
        self.assertTrue(any("buffer_len.value" in n for n in c["notes"]))

    def test_every_workload_defined_and_checked(self):
        c = self.data["context"]
        names = {b["run_name"] for b in self.data["benchmarks"]}
        self.assertEqual(set(c["workloads"]), names)
        self.assertEqual(set(c["checks"]), names)
        for name, check in c["checks"].items():
            self.assertEqual(check["status"], "ok", name)
            self.assertTrue(check["detail"].startswith("ok: "), name)
        for name, w in c["workloads"].items():
            self.assertTrue(w["definition"], name)
            self.assertTrue(w["per_iteration"], name)

    def test_name_contract(self):
        names = {b["run_name"] for b in self.data["benchmarks"]}
        for pattern in EXPECTED:
            self.assertTrue(any(re.fullmatch(pattern, n) for n in names),
                            f"no benchmark named {pattern}")
        for n in names:
            parsed = gbench.parse_name(n)
            self.assertEqual(parsed.prefix, "Py", n)
            self.assertNotIn("real_time", n)
            # Arguments are key:value, except the pool workload.
            for i, (k, v) in enumerate(parsed.args):
                self.assertTrue(k or (i == 0 and v in (
                    "double", "sha512_inherited", "sha512_sent")), n)

    def test_google_benchmark_shape(self):
        entries = self.data["benchmarks"]
        self.assertTrue(entries)
        reps = {}
        for e in entries:
            self.assertNotIn("error_occurred", e, e["name"])
            for key, typ in (("name", str), ("run_name", str),
                             ("run_type", str), ("repetitions", int),
                             ("threads", int), ("iterations", int),
                             ("real_time", float), ("cpu_time", float),
                             ("time_unit", str), ("family_index", int),
                             ("per_family_instance_index", int)):
                self.assertIsInstance(e.get(key), typ, f"{e['name']}: {key}")
            self.assertIn(e["time_unit"], TIME_UNITS)
            self.assertEqual(e["threads"], 1)
            if e["run_type"] == "iteration":
                self.assertEqual(e["name"], e["run_name"])
                self.assertGreaterEqual(e["iterations"], 1)
                self.assertGreater(e["real_time"], 0)
                self.assertTrue(e["label"].startswith("ok: "), e["name"])
                reps.setdefault(e["name"], []).append(e["repetition_index"])
                fam = gbench.parse_name(e["name"]).family
                self.assertIn("items_per_second", e, e["name"])
                if "Pipe" in fam or "Queue" in fam or fam == "FloatChannel":
                    self.assertIn("bytes_per_second", e, e["name"])
                if fam.endswith("PingPong"):
                    self.assertLessEqual(e["p50_ns"], e["p99_ns"])
            else:
                self.assertEqual(e["run_type"], "aggregate")
                self.assertIn(e["aggregate_name"],
                              ("mean", "median", "stddev", "cv"))
                self.assertEqual(e["name"],
                                 f"{e['run_name']}_{e['aggregate_name']}")
        for name, idx in reps.items():
            first = next(e for e in entries if e["name"] == name)
            self.assertEqual(sorted(idx), list(range(first["repetitions"])),
                             name)

    def test_shared_loader_reads_it(self):
        names = self.loaded.names()
        self.assertTrue(names)
        for n in names:
            self.assertIsNone(self.loaded.error(n), n)
            self.assertGreater(self.loaded.median(n), 0, n)
            self.assertTrue(self.loaded.samples(n, "items_per_second"), n)

    def test_work_matches_definition(self):
        """bytes_per_second / items_per_second is the bytes per message the
        workload definition states."""
        w = self.data["context"]["workloads"]
        for e in self.data["benchmarks"]:
            if e["run_type"] != "iteration" or "bytes_per_second" not in e:
                continue
            per = w[e["name"]]["per_iteration"]
            if "bytes" not in per:
                continue
            self.assertAlmostEqual(
                e["bytes_per_second"] / e["items_per_second"], per["bytes"],
                delta=1e-6 * per["bytes"], msg=e["name"])


class FailureTest(unittest.TestCase):

    def test_failed_check_exits_nonzero(self):
        proc, data, _ = run_reference(
            "--quick", "--repetitions", "1",
            "--filter", r"^PyQueueThroughput/bytes:64$|^PyForkExitWait$",
            "--break-check", "Queue")
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        checks = data["context"]["checks"]
        self.assertEqual(checks["PyQueueThroughput/bytes:64"]["status"],
                         "failed")
        self.assertEqual(checks["PyForkExitWait"]["status"], "ok")
        bad = [e for e in data["benchmarks"] if e.get("error_occurred")]
        self.assertEqual([e["name"] for e in bad],
                         ["PyQueueThroughput/bytes:64"])

    def test_filter_matching_nothing(self):
        proc = subprocess.run(
            [sys.executable, SCRIPT, "--quick", "--filter", "NoSuchBench"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 2)

    def test_list(self):
        proc = subprocess.run([sys.executable, SCRIPT, "--list"],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0)
        for name in ("PyQueueThroughput/bytes:64",
                     "PyPoolMap/double/items:1000000/chunksize:1/workers:2",
                     "PyForkExitWait/rss_mib:512",
                     "PyPipeThroughput/bytes:16777216"):
            self.assertIn(name + "\n", proc.stdout)


def _report_affinity(conn):
    conn.send(sorted(os.sched_getaffinity(0)))


class PlacementTest(unittest.TestCase):
    """Peers and the benchmark run on two CPUs, as in //bench:ipc, and the
    benchmark's own pin ends with it, even when it fails."""

    def setUp(self):
        import python_reference
        self.ref = python_reference
        self.allowed = os.sched_getaffinity(0)

    def tearDown(self):
        os.sched_setaffinity(0, self.allowed)

    def test_pin_off(self):
        old = os.environ.get("MPBENCH_PIN")
        os.environ["MPBENCH_PIN"] = "0"
        try:
            self.assertIsNone(self.ref.pinned_cpus())
        finally:
            if old is None:
                del os.environ["MPBENCH_PIN"]
            else:
                os.environ["MPBENCH_PIN"] = old

    def test_peer_and_benchmark_on_two_cpus_until_it_returns(self):
        cpus = self.ref.pinned_cpus()
        if cpus is None:
            self.skipTest("fewer than two CPUs allowed")
        seen = {}

        def bench(state):
            r, w = self.ref.CTX.Pipe(duplex=False)
            peer = self.ref.start_peer(_report_affinity, w)
            seen["peer"] = r.recv()
            seen["self"] = sorted(os.sched_getaffinity(0))
            self.ref.join_peer(peer)
            raise RuntimeError("fails after the peer ran")

        class Bench:
            fn = staticmethod(bench)
            params = {}

        with self.assertRaises(RuntimeError):
            self.ref.call(Bench, 1)
        self.assertEqual(seen, {"peer": [cpus[1]], "self": [cpus[0]]})
        self.assertEqual(os.sched_getaffinity(0), self.allowed)

    def test_join_peer_ends_the_pin_outside_a_benchmark(self):
        # The float channel's self-check at start-up runs a peer outside
        # call(); a pin left behind put every later row on one CPU.
        if self.ref.pinned_cpus() is None:
            self.skipTest("fewer than two CPUs allowed")
        r, w = self.ref.CTX.Pipe(duplex=False)
        peer = self.ref.start_peer(_report_affinity, w)
        r.recv()
        self.ref.join_peer(peer)
        self.assertEqual(os.sched_getaffinity(0), self.allowed)


if __name__ == "__main__":
    unittest.main()
