"""Tests of scripts/report.py on synthetic and real fixture runs: every
table the run has data for, nothing made up for what it lacks, new
benchmark names and counters shown, the HTML self-contained."""

import contextlib
import io
import json
import os
import re
import tempfile
import unittest
from pathlib import Path

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-test-"))

import gbench  # noqa: E402
import report  # noqa: E402
import synth  # noqa: E402

TESTDATA = Path(__file__).resolve().parent / "testdata"


def run_of(spec, reps=3, **context):
    data = synth.make_run(spec, repetitions=reps, context={"mpbench": {
        "started_utc": "2026-01-01T00:00:00Z", "commit_short": "abc1234",
        "cores": 2, "cpu_model": "Synthetic CPU", **context}})
    return gbench.parse_run(data, "/x/20260101T000000Z-abc1234-host.json")


def keys(tables):
    return [t.key for t in tables]


class Tables(unittest.TestCase):
    def setUp(self):
        self.run = run_of(synth.full_spec(small=True))
        self.tables = {t.key: t for t in report.build_tables(self.run)}

    def test_every_table_of_a_full_run(self):
        for k in ("process", "throughput", "roundtrip", "pool_speedup",
                  "pool_workers", "pool_cost_double_1000", "pool_cost_sleep_1000",
                  "python"):
            self.assertIn(k, self.tables)

    def test_process_ratio_is_process_over_fork(self):
        t = self.tables["process"]
        self.assertIn("mp::Process start+join / fork + _exit + waitpid", t.header)
        col = t.header.index("mp::Process start+join / fork + _exit + waitpid")
        plain = next(r for r in t.rows if r[0] == "(plain)")
        # synth: ForkExitWait 90 µs, ProcessStartJoin 100 µs
        self.assertAlmostEqual(float(plain[col].rstrip("×")), 100 / 90, delta=0.03)

    def test_throughput_in_decimal_gb_and_over_the_raw_limit(self):
        t = self.tables["throughput"]
        row = next(r for r in t.rows if r[0] == "1 MiB")
        memcpy = row[t.header.index("memcpy")]
        # synth memcpy: 5 ns + 0.05 ns/byte
        expected = 1048576 / (5 + 0.05 * 1048576)
        self.assertAlmostEqual(float(memcpy), expected, delta=0.02 * expected)
        pipe = row[t.header.index("mp pipe")]
        self.assertRegex(pipe, r"^[\d.]+ \(0\.\d+×\)$")

    def test_break_even(self):
        # o = pool/item - serial/item / W; c* = o W / (W - 1)
        self.assertAlmostEqual(report.break_even(30.0, 2.0, 2), 58.0)
        self.assertIsNone(report.break_even(30.0, 2.0, 1))
        t = self.tables["pool_cost_double_1000"]
        self.assertEqual(t.header[:2], ["chunksize", "serial"])
        self.assertTrue(any("c*" in c for r in t.rows for c in r))

    def test_commands_name_the_family_binary(self):
        cmds = self.tables["throughput"].commands
        self.assertTrue(any(c.startswith("bazel run //bench:ipc --") for c in cmds), cmds)
        self.assertIn("python_reference", " ".join(self.tables["python"].commands))

    def test_nothing_is_lost(self):
        shown = set().union(*(t.names for t in self.tables.values()))
        self.assertEqual(set(self.run.names()) - shown, set())


class Generic(unittest.TestCase):
    def test_new_names_and_counters_appear(self):
        spec = synth.ipc_spec()
        for n in synth.BYTES:
            t = 50 + 0.06 * n
            spec[f"BM_RawRingThroughput/bytes:{n}/real_time"] = (
                t, {"bytes_per_second": n * 1e9 / t, "minor_faults": 3.0})
        spec["BM_RawRingPoolMap/double/items:1000/chunksize:8/workers:2/real_time"] = (
            9e5, {"items_per_second": 1e6})
        spec["BM_Mystery/x:1"] = (5.0, {"widgets": 2.0})
        tables = {t.key: t for t in report.build_tables(run_of(spec))}
        self.assertTrue(any("raw ring" in h for h in tables["throughput"].header))
        self.assertIn("minor_faults", json.dumps(tables["counters"].rows))
        other = json.dumps(tables["other"].rows)
        self.assertIn("BM_Mystery/x:1", other)
        self.assertIn("widgets", other)
        self.assertIn("pool_speedup", tables)  # a map family with no serial: no crash

    def test_fork_only_run(self):
        run = gbench.load_run(TESTDATA / "fork_quick.json")
        self.assertEqual(keys(report.build_tables(run))[:1], ["process"])
        self.assertNotIn("throughput", keys(report.build_tables(run)))

    def test_other_names_and_single_repetition(self):
        for f in ("other_names.json", "single_rep.json"):
            with self.subTest(f):
                tables = report.build_tables(gbench.load_run(TESTDATA / f))
                self.assertTrue(tables)


class Command(unittest.TestCase):
    def main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = report.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_html_and_markdown_with_charts_inline(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.json"
            path.write_text(json.dumps(synth.make_run(synth.full_spec(small=True),
                                                      repetitions=3)))
            out = Path(tmp) / "rep"
            code, stdout, err = self.main(str(path), "--out-dir", str(out), "--no-history")
            self.assertEqual(code, 0, err)
            self.assertEqual(stdout.strip(), str(out / "index.html"))
            page = (out / "index.html").read_text()
            charts = int(re.search(r'name="mpbench-charts" content="(\d+)"', page).group(1))
            self.assertGreaterEqual(charts, 5)
            self.assertEqual(page.count("<svg"), charts)
            # self-contained: no external image, script or stylesheet
            self.assertNotRegex(page, r'<img|src=|<link|href="http')
            md = (out / "REPORT.md").read_text()
            self.assertIn("## How fast data moves", md)
            for m in re.findall(r"\]\((charts/[^)]+)\)", md):
                self.assertTrue((out / m).is_file(), m)

    def test_latency_distribution_chart(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rep"
            code, _, err = self.main(str(TESTDATA / "pingpong_cdf.json"), "--out-dir",
                                     str(out), "--no-history")
            self.assertEqual(code, 0, err)
            page = (out / "index.html").read_text()
            self.assertIn("Round-trip latency distribution", page)
            charts = int(re.search(r'name="mpbench-charts" content="(\d+)"', page).group(1))
            self.assertEqual(charts, 2)  # latency, latency_cdf
            self.assertEqual(page.count("<svg"), charts)
            md = (out / "REPORT.md").read_text()
            self.assertIn("](charts/latency_cdf.png)", md)
            self.assertTrue((out / "charts" / "latency_cdf.png").is_file())
            # drawn, not listed as 19 counters a row
            self.assertNotIn("cdf_p", md)
            # the README's results page links the chart for such a run only
            run = gbench.load_run(TESTDATA / "pingpong_cdf.json")
            self.assertIn("latency_cdf.png", report.docs_results(run, "r.json"))
            other = gbench.load_run(TESTDATA / "single_rep.json")
            self.assertNotIn("latency_cdf", report.docs_results(other, "r.json"))

    def test_several_runs_later_wins(self):
        with tempfile.TemporaryDirectory() as tmp:
            code, _, err = self.main(str(TESTDATA / "py_cpp_run.json"),
                                     str(TESTDATA / "py_python_run.json"),
                                     "--out-dir", tmp, "--no-charts")
            self.assertEqual(code, 0, err)
            self.assertIn("CPython side by side", (Path(tmp) / "REPORT.md").read_text())

    def test_bad_input(self):
        with tempfile.TemporaryDirectory() as tmp:
            code, _, err = self.main(str(TESTDATA / "truncated.json"), "--out-dir", tmp)
            self.assertEqual(code, 2)
            self.assertIn("truncated", err)
            self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
    unittest.main()
