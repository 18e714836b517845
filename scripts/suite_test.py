"""Tests of the runner's pure parts (scripts/suite.py), the A/B pooling
(scripts/ab.py) and the baseline command (scripts/baseline.py). Building and
running the benchmarks themselves is left to scripts/bench and CI."""

import contextlib
import datetime as dt
import io
import json
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import ab
import baseline
import gbench
import suite
import synth


def entries(spec, reps=2):
    return synth.make_run(spec, repetitions=reps)


class Merge(unittest.TestCase):
    def test_merge_keeps_context_and_all_benchmarks(self):
        a = entries({"BM_A/real_time": (1.0, {})})
        b = entries({"BM_B/bytes:8/real_time": (2.0, {})})
        a["context"]["executable"] = "/x/fork"
        m = suite.merge([("fork", a), ("ipc", b)])
        self.assertEqual(len(m["benchmarks"]), len(a["benchmarks"]) + len(b["benchmarks"]))
        self.assertEqual(m["context"]["num_cpus"], 2)
        self.assertNotIn("executable", m["context"])
        run = gbench.parse_run(m)
        self.assertEqual(run.names(), ["BM_A", "BM_B/bytes:8"])

    def test_duplicate_names_across_families_fail(self):
        a = entries({"BM_A/real_time": (1.0, {})})
        with self.assertRaises(suite.SuiteError):
            suite.merge([("fork", a), ("ipc", a)])


class AtomicWrite(unittest.TestCase):
    def test_write_and_no_leftovers(self):
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "runs" / "r.json"
            suite.write_atomic(p, {"benchmarks": [1]})
            self.assertEqual(json.loads(p.read_text()), {"benchmarks": [1]})
            self.assertEqual(os.listdir(p.parent), ["r.json"])
            self.assertEqual(p.stat().st_mode & 0o044, 0o044 & ~_umask())

    def test_interrupted_write_leaves_nothing(self):
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "r.json"
            with mock.patch.object(suite.json, "dump", side_effect=KeyboardInterrupt):
                with self.assertRaises(KeyboardInterrupt):
                    suite.write_atomic(p, {"benchmarks": []})
            self.assertEqual(os.listdir(tmp), [])

    def test_interrupted_replace_keeps_old_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "r.json"
            p.write_text('{"old": 1}')
            with mock.patch.object(suite.json, "dump", side_effect=OSError("disk full")):
                with self.assertRaises(OSError):
                    suite.write_atomic(p, {"new": 1})
            self.assertEqual(json.loads(p.read_text()), {"old": 1})
            self.assertEqual(os.listdir(tmp), ["r.json"])


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


class Naming(unittest.TestCase):
    def test_default_out(self):
        when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        p = suite.default_out(Path("/repo"), when, {"commit": "abcdef1234567",
                                                    "commit_short": "abcdef1234",
                                                    "host": "box.example"})
        self.assertEqual(str(p), "/repo/results/runs/20260102T030405Z-abcdef1-box.json")

    def test_benchmark_args(self):
        args = suite.benchmark_args(Path("/b/fork"), Path("/t/o.json"), 5, 0.01, "BM_X", ["--v=1"])
        self.assertIn("--benchmark_repetitions=5", args)
        self.assertIn("--benchmark_min_time=0.01", args)
        self.assertIn("--benchmark_enable_random_interleaving=true", args)
        self.assertIn("--benchmark_out_format=json", args)
        self.assertEqual(args[-1], "--v=1")
        self.assertNotIn("--benchmark_min_time", " ".join(
            suite.benchmark_args(Path("/b/fork"), Path("o"), 10, None, None, [])))

    def test_families_declared_once(self):
        self.assertIn("fork", suite.FAMILIES)
        self.assertEqual(len(set(suite.FAMILIES)), len(suite.FAMILIES))


class AB(unittest.TestCase):
    def test_pool_runs_renumbers_repetitions(self):
        spec = {"BM_A/real_time": (1.0, {})}
        rounds = [synth.make_run(spec, repetitions=3, seed=i) for i in range(3)]
        pooled = ab.pool_runs(rounds)
        run = gbench.parse_run(pooled)
        self.assertEqual(len(run.samples("BM_A")), 9)
        self.assertEqual(sorted(run.get("BM_A").repetition_index), list(range(9)))
        self.assertEqual({e["repetitions"] for e in pooled["benchmarks"]}, {9})
        self.assertFalse(any(e.get("run_type") == "aggregate" for e in pooled["benchmarks"]))

    def test_base_bazel_gets_its_own_output_base(self):
        self.assertEqual(ab.base_bazel(["bazel", "--output_base=/tmp/x/"]),
                         ["bazel", "--output_base=/tmp/x_ab_base"])
        self.assertEqual(ab.base_bazel(["bazel"]), ["bazel"])


class Baseline(unittest.TestCase):
    def run_baseline(self, root, *args):
        err = io.StringIO()
        with mock.patch.dict(os.environ, {"BUILD_WORKSPACE_DIRECTORY": str(root),
                                          "BUILD_WORKING_DIRECTORY": str(root)}):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = baseline.main([str(a) for a in args])
        return code, err.getvalue()

    def test_makes_machine_class_baseline(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "r.json").write_text(json.dumps(synth.make_run(synth.fork_spec(),
                                                                   repetitions=5)))
            code, err = self.run_baseline(root, "r.json")
            self.assertEqual(code, 0, err)
            dest = root / "results" / "baselines" / "x86_64-2cpu.json"
            run = gbench.load_run(dest)
            self.assertEqual(run.mpbench["baseline"]["sources"][0]["file"], "r.json")
            code, err = self.run_baseline(root, "r.json", "--name", "mybox")
            self.assertEqual(code, 0, err)
            self.assertTrue((root / "results" / "baselines" / "mybox.json").is_file())

    def test_refuses_too_few_repetitions_and_bad_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "r.json").write_text(json.dumps(synth.make_run(synth.fork_spec(),
                                                                   repetitions=3)))
            code, err = self.run_baseline(root, "r.json")
            self.assertEqual(code, 2)
            self.assertIn("fewer than 4 repetitions", err)
            (root / "bad.json").write_text("{")
            code, err = self.run_baseline(root, "bad.json")
            self.assertEqual(code, 2)
            self.assertFalse((root / "results").exists())


if __name__ == "__main__":
    unittest.main()
