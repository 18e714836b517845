"""Tests of the run-file loader (scripts/gbench.py) and the reference
declarations (scripts/references.py)."""

import json
import os
import tempfile
import unittest
from pathlib import Path

import gbench
import references
import synth

TESTDATA = Path(__file__).resolve().parent / "testdata"


def write(tmp, name, data):
    p = Path(tmp) / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


class LoadTest(unittest.TestCase):
    def test_real_fork_run(self):
        run = gbench.load_run(TESTDATA / "fork_quick.json")
        self.assertIn("BM_ProcessStartJoin/rss_mib:64", run.names())
        self.assertTrue(run.has("BM_ProcessStartJoin/rss_mib:64/real_time"))
        s = run.samples("BM_ForkExitWait")
        self.assertEqual(len(s), 5)
        self.assertTrue(all(v > 1000 for v in s))  # ns: a fork takes > 1 us
        self.assertEqual(len(run.samples("BM_ForkExitWait", "items_per_second")), 5)
        self.assertIsNotNone(run.median("BM_ForkExitWait"))
        self.assertEqual(run.mpbench["machine_class"], "x86_64-2cpu")
        self.assertIn("cpu_model", run.fingerprint())

    def test_time_units_are_normalised(self):
        spec = {"BM_A/real_time": (5000.0, {})}
        ns = gbench.parse_run(synth.make_run(spec, repetitions=3, noise=0))
        us = gbench.parse_run(synth.make_run(spec, repetitions=3, noise=0, time_unit="us"))
        self.assertAlmostEqual(ns.median("BM_A"), 5000.0)
        self.assertAlmostEqual(us.median("BM_A"), 5000.0)
        self.assertAlmostEqual(us.get("BM_A").aggregates["median"]["time"], 5000.0)

    def test_aggregates_only(self):
        data = synth.make_run({"BM_A/real_time": (100.0, {"bytes_per_second": 1e9})},
                              repetitions=4, noise=0)
        data["benchmarks"] = [e for e in data["benchmarks"]
                              if e["run_type"] == "aggregate"]
        run = gbench.parse_run(data)
        self.assertEqual(run.samples("BM_A"), [])
        self.assertAlmostEqual(run.median("BM_A"), 100.0)
        self.assertAlmostEqual(run.median("BM_A", "bytes_per_second"), 1e9)
        # cv is a percentage, not a time: not scaled
        self.assertEqual(run.get("BM_A").aggregates["cv"]["time"], 0.0)

    def test_error_occurred(self):
        data = synth.make_run({"BM_A/real_time": (100.0, {})}, repetitions=2)
        data["benchmarks"].append({"name": "BM_B/real_time", "run_name": "BM_B/real_time",
                                   "run_type": "iteration", "error_occurred": True,
                                   "error_message": "fork: EAGAIN", "real_time": 0,
                                   "cpu_time": 0, "time_unit": "ns", "iterations": 0})
        run = gbench.parse_run(data)
        self.assertEqual(run.error("BM_B"), "fork: EAGAIN")
        self.assertEqual(run.samples("BM_B"), [])
        self.assertIsNone(run.median("BM_B"))

    def test_bad_inputs_raise_input_error(self):
        cases = {
            "not_json.json": "not JSON",
            "truncated.json": "truncated",
            "no_benchmarks.json": "no 'benchmarks'",
        }
        for name, words in cases.items():
            with self.subTest(name):
                with self.assertRaises(gbench.InputError) as cm:
                    gbench.load_run(TESTDATA / name)
                self.assertIn(words, str(cm.exception))
        with tempfile.TemporaryDirectory() as tmp:
            for data, words in (("", "empty"), ("[1, 2]", "top level"),
                                ({"benchmarks": []}, "empty"),
                                ({"benchmarks": [{"name": "x"}]}, "real_time"),
                                ({"benchmarks": [{"name": "x", "real_time": 1,
                                                  "cpu_time": 1, "time_unit": "fs"}]},
                                 "time_unit")):
                with self.subTest(data=data):
                    with self.assertRaises(gbench.InputError) as cm:
                        gbench.load_run(write(tmp, "f.json", data))
                    self.assertIn(words, str(cm.exception))
            with self.assertRaises(gbench.InputError):
                gbench.load_run(Path(tmp) / "missing.json")


class NameTest(unittest.TestCase):
    def test_parse(self):
        n = gbench.parse_name("BM_PoolMap/double/items:10000/chunksize:8/workers:2/real_time")
        self.assertEqual((n.prefix, n.family), ("BM_", "PoolMap"))
        self.assertEqual(n.arg(0), "double")
        self.assertEqual(n.arg("chunksize"), "8")
        self.assertEqual(n.full, "BM_PoolMap/double/items:10000/chunksize:8/workers:2")
        p = gbench.parse_name("PyPipeThroughput/bytes:4096")
        self.assertEqual((p.prefix, p.family, p.arg("bytes")), ("Py", "PipeThroughput", "4096"))
        self.assertEqual(gbench.base_name("BM_X/manual_time"), "BM_X")

    def test_natural_order(self):
        names = ["BM_A/bytes:64", "BM_A/bytes:8", "BM_A", "BM_A/bytes:4096"]
        self.assertEqual(sorted(names, key=gbench.natural_key),
                         ["BM_A", "BM_A/bytes:8", "BM_A/bytes:64", "BM_A/bytes:4096"])

    def test_user_path(self):
        old = os.environ.get("BUILD_WORKING_DIRECTORY")
        os.environ["BUILD_WORKING_DIRECTORY"] = "/somewhere"
        try:
            self.assertEqual(str(gbench.user_path("a.json")), "/somewhere/a.json")
            self.assertEqual(str(gbench.user_path("/x/a.json")), "/x/a.json")
        finally:
            if old is None:
                del os.environ["BUILD_WORKING_DIRECTORY"]
            else:
                os.environ["BUILD_WORKING_DIRECTORY"] = old


class ReferencesTest(unittest.TestCase):
    # The raw ring pool rows //bench:pool registers at items:10000 (the
    # contract below asks about these and about rows it has none of).
    RAW_RING = {f"BM_RawRingPoolMap/double/items:{n}/chunksize:{c}/workers:{w}"
                for n in (10000, 1000000) for c in (1, 8, 64) for w in (1, 2)}

    def refs(self, name):
        return [r for _, r in references.references(name, self.RAW_RING.__contains__)]

    def test_contract(self):
        self.assertEqual(self.refs("BM_ProcessStartJoin/rss_mib:64/real_time"),
                         ["BM_ForkExitWait/rss_mib:64"])
        self.assertEqual(self.refs("BM_ProcessStartJoin/real_time"), ["BM_ForkExitWait"])
        self.assertEqual(self.refs("BM_PipeThroughput/bytes:512/real_time"),
                         ["BM_RawPipeThroughput/bytes:512",
                          "BM_RawPipeGrownThroughput/bytes:512",
                          "BM_RawPipeFramedThroughput/bytes:512"])
        self.assertEqual(self.refs("BM_SpscRingThroughput/bytes:64/real_time"),
                         ["BM_RawRingThroughput/bytes:64", "BM_MemcpyThroughput/bytes:64"])
        self.assertEqual(self.refs("BM_SpscRingPingPong/bytes:64/spin_us:50"),
                         ["BM_RawRingPingPong/bytes:64", "BM_RawSpinPingPong"])
        self.assertEqual(self.refs("BM_SpscRingPingPong/bytes:64/spin_us:0"),
                         ["BM_RawFutexPingPong"])
        self.assertEqual(self.refs("BM_RingChannelThroughput/bytes:64/slots:8/spin_us:5"),
                         ["BM_MemcpyThroughput/bytes:64", "BM_RawPipeThroughput/bytes:64"])
        self.assertEqual(self.refs("BM_QueuePingPong/bytes:8/spin_us:0/manual_time"),
                         ["BM_RawFutexPingPong"])
        self.assertEqual(self.refs("BM_ChannelPingPong/bytes:8/spin_us:20"),
                         ["BM_RawSpinPingPong"])
        self.assertEqual(self.refs("BM_PipePingPong/bytes:64"),
                         ["BM_RawPipePingPong/bytes:64", "BM_RawPipeGrownPingPong/bytes:64"])
        self.assertEqual(
            self.refs("BM_PoolImapUnordered/sha512_sent/items:100/chunksize:default/workers:4"),
            ["BM_SerialMap/sha512_sent/items:100"])
        self.assertEqual(
            self.refs("BM_PoolMap/double/items:10000/chunksize:64/workers:2/real_time"),
            ["BM_SerialMap/double/items:10000",
             "BM_RawRingPoolMap/double/items:10000/chunksize:64/workers:2"])
        self.assertEqual(
            self.refs("BM_PoolMapInto/double/items:1000000/chunksize:8/workers:1/real_time"),
            ["BM_RawRingPoolMap/double/items:1000000/chunksize:8/workers:1",
             "BM_SerialMap/double/items:1000000"])
        self.assertEqual(
            self.refs("BM_ThreadPoolMap/double/items:10000/chunksize:default/workers:2"),
            ["BM_SerialMap/double/items:10000"])
        self.assertEqual(self.refs("PyPipeThroughput/bytes:8"), ["PyRawPipeThroughput/bytes:8"])
        self.assertEqual(self.refs("BM_ForkExitWait"), [])

    def test_partial_reference_applies_where_the_run_has_it(self):
        name = "BM_PoolMap/double/items:100/chunksize:default/workers:2"
        raw = "BM_RawRingPoolMap/double/items:100/chunksize:default/workers:2"
        # by name alone: every reference that could apply
        self.assertEqual([r for _, r in references.references(name)],
                         ["BM_SerialMap/double/items:100", raw])
        self.assertEqual([r for _, r in references.references(name, {raw}.__contains__)],
                         ["BM_SerialMap/double/items:100", raw])
        self.assertEqual([r for _, r in references.references(name, set().__contains__)],
                         ["BM_SerialMap/double/items:100"])
        # a reference that is not partial is listed whether the run has it or not
        self.assertEqual(references.primary_reference("BM_PipeThroughput/bytes:8",
                                                      set().__contains__),
                         "BM_RawPipeThroughput/bytes:8")

    def test_gating(self):
        self.assertTrue(references.is_gated("BM_PoolMap/double/items:1/chunksize:1/workers:1"))
        self.assertTrue(references.is_gated("BM_PoolCreate/workers:2"))
        self.assertFalse(references.is_gated("BM_ForkExitWait"))
        self.assertFalse(references.is_gated("BM_BoostMqThroughput/bytes:8"))
        self.assertFalse(references.is_gated("PyPoolMap/double/items:1/chunksize:1/workers:1"))

    def test_every_synthetic_benchmark_of_ours_has_its_reference(self):
        spec = synth.full_spec()
        names = {gbench.base_name(n) for n in spec}
        for name in names:
            for _, ref in references.references(name, names.__contains__):
                if name.startswith("BM_"):
                    self.assertIn(ref, names, f"{name} -> {ref}")


if __name__ == "__main__":
    unittest.main()
