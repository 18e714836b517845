"""Smoke test of scripts/plot.py: every chart is written, SVG and PNG, and
not empty; bad input is a clear error."""

import contextlib
import io
import json
import os
import tempfile
import unittest
from pathlib import Path

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-test-"))

import plot  # noqa: E402
import synth  # noqa: E402

TESTDATA = Path(__file__).resolve().parent / "testdata"


class PlotTest(unittest.TestCase):
    def test_all_charts(self):
        spec = {**synth.fork_spec(), **synth.ipc_spec(),
                **synth.pool_spec(workloads=("double", "sleep"), chunks=("1", "64", "default"),
                                  workers=(1, 2, 4))}
        spec.update(synth.python_spec({k: v for k, v in spec.items()
                                       if "Pipe" in k or "ForkExitWait" in k or "/double/" in k}))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            runs = tmp / "runs"
            runs.mkdir()
            for i in range(3):
                data = synth.make_run(spec, repetitions=2, seed=i, context={"mpbench": {
                    "started_utc": f"2026-01-0{i + 1}T00:00:00Z", "commit_short": f"c{i}"}})
                (runs / f"r{i}.json").write_text(json.dumps(data))
            out = tmp / "charts"
            out_s, err_s = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out_s), contextlib.redirect_stderr(err_s):
                code = plot.main([str(runs / "r2.json"), "--out-dir", str(out),
                                  "--runs-dir", str(runs)])
            self.assertEqual(code, 0, err_s.getvalue())
            names = ["throughput", "latency", "fork_rss", "pool_double_items1000",
                     "pool_sleep_items1000", "pool_speedup", "pool_break_even", "history"]
            for n in names:
                for ext in ("svg", "png"):
                    p = out / f"{n}.{ext}"
                    with self.subTest(p.name):
                        self.assertTrue(p.is_file())
                        self.assertGreater(p.stat().st_size, 1000)
            # every chart shows the spread of the repetitions: bands (or the
            # history's error bars), drawn with their own opacity
            spread = (f"fill-opacity: {plot.BAND_ALPHA}", f"fill-opacity: {plot.BAND_ALPHA / 2}",
                      f"stroke-opacity: {plot.ERRORBAR_ALPHA}")
            for p in out.glob("*.svg"):
                with self.subTest(spread=p.name):
                    text = p.read_text()
                    self.assertTrue(any(s in text for s in spread), p.name)
            self.assertTrue((out / "throughput.png").read_bytes().startswith(b"\x89PNG"))
            self.assertIn(b"<svg", (out / "latency.svg").read_bytes()[:2000])
            self.assertEqual([p for p in out.iterdir() if p.name.startswith(".")], [])

    def test_latency_cdf_of_a_real_run(self):
        # testdata/pingpong_cdf.json: bazel-bin/bench/ipc
        #   --benchmark_filter='PingPong/bytes:(8|4096)/|Raw(Futex|Spin)PingPong'
        #   --benchmark_min_time=0.05 --benchmark_repetitions=3 (repetitions kept)
        run = plot.gbench.load_run(TESTDATA / "pingpong_cdf.json")
        self.assertTrue(plot.has_cdf(run))
        pts = plot.cdf_points(run, "BM_QueuePingPong/bytes:8/spin_us:0")
        fracs = [p[0] for p in pts]
        self.assertEqual(fracs[0], 0.0)
        self.assertEqual(fracs[-1], 1.0)
        self.assertIn(0.5, fracs)
        self.assertEqual(fracs, sorted(fracs))
        meds = [p[1] for p in pts]
        self.assertEqual(meds, sorted(meds))  # each repetition's are sorted
        for frac, mid, lo, hi in pts:
            self.assertLessEqual(lo, mid)
            self.assertLessEqual(mid, hi)
        # cdf_p50_ns is p50_ns under another name
        self.assertEqual(dict((p[0], p[1]) for p in pts)[0.5],
                         run.median("BM_QueuePingPong/bytes:8/spin_us:0", "p50_ns"))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            written, notes = [], []
            plot.chart_latency_cdf(plot._plt(), run, out, written, notes)
            svg = (out / "latency_cdf.svg").read_text()
            self.assertIn(out / "latency_cdf.png", written)
            # a panel per message size, every mechanism in the one legend
            self.assertIn("message 8 B", svg)
            self.assertIn("message 4 KiB", svg)
            for label in ("raw spin (no payload)", "raw futex (no payload)",
                          "Queue (spin 0 µs)", "Boost message_queue", "SpscRing (spin 50 µs)"):
                self.assertIn(label, svg)
            # the mechanism's colour, as in every chart
            self.assertIn(plot.colour_of("QueuePingPong"), svg)

    def test_no_cdf_chart_without_percentiles(self):
        run = plot.gbench.parse_run(synth.make_run(synth.ipc_spec(), repetitions=2))
        self.assertFalse(plot.has_cdf(run))
        with tempfile.TemporaryDirectory() as tmp:
            written, notes = [], []
            plot.chart_latency_cdf(plot._plt(), run, Path(tmp), written, notes)
            self.assertEqual(written, [])
            self.assertFalse((Path(tmp) / "latency_cdf.svg").exists())
            self.assertTrue(any(n.startswith("latency_cdf:") for n in notes), notes)

    def test_colours_and_labels(self):
        # one colour per mechanism, whatever the chart
        self.assertEqual(plot.colour_of("QueueThroughput"), plot.colour_of("QueuePingPong"))
        self.assertNotEqual(plot.colour_of("QueueThroughput"),
                            plot.colour_of("ChannelThroughput"))
        self.assertEqual(plot.colour_of("BM_NewThing"), plot.colour_of("BM_NewThing"))
        known = list(plot.MECHANISM_COLOURS.values())
        self.assertEqual(len(known), len(set(known)))
        # CPython has no mp::Process
        label = plot._mech_label(plot.gbench.parse_name("PyProcessStartJoin"))
        self.assertNotIn("mp::", label)
        self.assertIn("multiprocessing.Process", label)

    def test_break_even(self):
        self.assertAlmostEqual(plot.break_even(30.0, 2.0, 2), 58.0)
        self.assertAlmostEqual(plot.break_even(30.0, 3.0, 4), (30.0 - 0.75) * 4 / 3)
        self.assertIsNone(plot.break_even(30.0, 2.0, 1))

    def test_real_fork_run_charts_what_it_has(self):
        with tempfile.TemporaryDirectory() as tmp:
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = plot.main([str(TESTDATA / "fork_quick.json"), "--out-dir", tmp,
                                  "--no-history"])
            self.assertEqual(code, 0)
            self.assertEqual(sorted(os.listdir(tmp)), ["fork_rss.png", "fork_rss.svg"])
            self.assertIn("throughput: no", err.getvalue())

    def test_bad_input(self):
        with tempfile.TemporaryDirectory() as tmp:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = plot.main([str(TESTDATA / "truncated.json"), "--out-dir", tmp])
            self.assertEqual(code, 2)
            self.assertIn("truncated", err.getvalue())
            self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
    unittest.main()
