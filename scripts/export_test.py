"""scripts/export.py: each format's shape and values on fixture runs."""

import contextlib
import io
import json
import statistics
import tempfile
import unittest
from pathlib import Path

import export
import gbench
import synth

TESTDATA = Path(__file__).resolve().parent / "testdata"


def run_export(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class GithubActionBenchmark(unittest.TestCase):
    def test_custom_smaller_is_better(self):
        code, out, err = run_export(str(TESTDATA / "fork_quick.json"),
                                    "--format", "github-action-benchmark")
        self.assertEqual(code, 0, err)
        entries = json.loads(out)
        self.assertIsInstance(entries, list)
        run = gbench.load_run(TESTDATA / "fork_quick.json")
        by_name = {e["name"]: e for e in entries}
        self.assertEqual(set(by_name), set(run.names()))
        for e in entries:
            self.assertEqual(set(e), {"name", "unit", "value", "range", "extra"})
            self.assertEqual(e["unit"], "ns")
            self.assertIsInstance(e["value"], float)
            self.assertTrue(e["range"].startswith("± "))
        name = run.names()[0]
        self.assertAlmostEqual(by_name[name]["value"],
                               statistics.median(run.samples(name)))

    def test_latency_counters_but_no_rates(self):
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "ipc.json"
            p.write_text(json.dumps(synth.make_run(synth.ipc_spec(), repetitions=3)))
            _, out, _ = run_export(str(p), "--format", "github-action-benchmark")
        names = {e["name"] for e in json.loads(out)}
        self.assertIn("BM_RawFutexPingPong [p99_ns]", names)
        self.assertFalse(any("bytes_per_second" in n for n in names))


class Bencher(unittest.TestCase):
    def test_metric_format(self):
        code, out, err = run_export(str(TESTDATA / "fork_quick.json"), "--format", "bencher")
        self.assertEqual(code, 0, err)
        bmf = json.loads(out)
        run = gbench.load_run(TESTDATA / "fork_quick.json")
        self.assertEqual(set(bmf), set(run.names()))
        for name, measures in bmf.items():
            lat = measures["latency"]
            self.assertLessEqual(lat["lower_value"], lat["value"])
            self.assertLessEqual(lat["value"], lat["upper_value"])
            self.assertIn("throughput", measures)  # items_per_second
        name = run.names()[0]
        self.assertEqual(bmf[name]["latency"]["lower_value"], min(run.samples(name)))

    def test_bad_input_and_out_file(self):
        code, _, err = run_export(str(TESTDATA / "truncated.json"), "--format", "bencher")
        self.assertEqual(code, 2)
        self.assertIn("truncated", err)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bmf.json"
            code, stdout, _ = run_export(str(TESTDATA / "single_rep.json"),
                                         "--format", "bencher", "--out", str(out))
            self.assertEqual((code, stdout), (0, ""))
            self.assertTrue(json.loads(out.read_text()))


if __name__ == "__main__":
    unittest.main()
