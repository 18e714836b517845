"""Tests of scripts/history.py: ordering, headline ratios, change points."""

import contextlib
import io
import json
import tempfile
import unittest
from pathlib import Path

import history
import synth

SPEC = {**synth.fork_spec(), **synth.pool_spec(workloads=("double",), chunks=("8",),
                                               workers=(2,))}


def write_runs(d: Path, factors, machine=None):
    """One run per factor: BM_ProcessStartJoin scaled by it (and the whole
    machine by `machine[i]` when given)."""
    for i, f in enumerate(factors):
        scale = {"^BM_ProcessStartJoin": f}
        if machine:
            scale["."] = machine[i]
        data = synth.make_run(SPEC, repetitions=3, seed=i, noise=0.002, scale=scale,
                              context={"mpbench": {"started_utc": f"2026-01-{i + 1:02d}T00:00:00Z",
                                                   "commit_short": f"c{i:06d}"}})
        # file names deliberately out of order: ordering is by start time
        (d / f"{9 - i}-run.json").write_text(json.dumps(data))


class ChangePoints(unittest.TestCase):
    def test_flat_series_has_no_step(self):
        self.assertEqual(history.change_points([1.0, 1.01, 0.99, 1.0, 1.01, 1.0]), [])

    def test_single_step_found_once(self):
        steps = history.change_points([1.0, 1.01, 0.99, 1.2, 1.21, 1.19])
        self.assertEqual(len(steps), 1)
        self.assertEqual(steps[0].index, 3)
        self.assertAlmostEqual(steps[0].change, 0.2, delta=0.01)
        self.assertTrue(steps[0].confirmed)

    def test_outlier_is_not_a_step(self):
        self.assertEqual(history.change_points([1.0, 1.01, 1.3, 0.99, 1.0, 1.01]), [])

    def test_small_change_below_threshold(self):
        self.assertEqual(history.change_points([1.0, 1.0, 1.0, 1.03, 1.03, 1.03]), [])

    def test_latest_run_alone_is_unconfirmed(self):
        steps = history.change_points([1.0, 1.01, 0.99, 1.0, 1.3])
        self.assertEqual(len(steps), 1)
        self.assertFalse(steps[0].confirmed)
        self.assertEqual(steps[0].index, 4)

    def test_missing_values_are_skipped(self):
        steps = history.change_points([1.0, None, 1.0, 1.0, 1.5, None, 1.5, 1.5])
        self.assertEqual([s.index for s in steps], [4])


class Runs(unittest.TestCase):
    def test_order_headlines_and_steps(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_runs(d, [1.0, 1.0, 1.0, 1.15, 1.15, 1.15],
                       machine=[1.0, 1.2, 0.9, 1.1, 1.0, 1.3])
            (d / "broken.json").write_text("{")
            (d / ".in-progress.json.tmp").write_text("{")
            runs, problems = history.list_runs(d)
            self.assertEqual(len(runs), 6)
            self.assertEqual(len(problems), 1)
            self.assertEqual([r.mpbench["commit_short"] for _, r in runs],
                             [f"c{i:06d}" for i in range(6)])
            heads = {h.family: h for h in history.analyse(runs)}
            self.assertEqual(set(heads), {"ProcessStartJoin", "PoolMap", "ThreadPoolMap",
                                          "PoolImapUnordered", "ForkMap"})
            psj = heads["ProcessStartJoin"]
            self.assertEqual([s.index for s in psj.steps], [3])
            # the machine moved, the ratios of the pool did not
            self.assertEqual(heads["PoolMap"].steps, [])
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(history.main(["--dir", tmp]), 0)
            text = out.getvalue()
            self.assertIn("step at run 4 (c000003", text)
            self.assertIn("skipped", text)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(history.main(["--dir", tmp, "--format", "json"]), 0)
            js = json.loads(out.getvalue())
            self.assertEqual(len(js["runs"]), 6)

    def test_spread_brackets_the_headline(self):
        def entry(name, i, t):
            return {"name": name, "run_name": name, "run_type": "iteration",
                    "repetitions": 3, "repetition_index": i, "iterations": 1,
                    "real_time": t, "cpu_time": t, "time_unit": "ns"}
        # ProcessStartJoin over ForkExitWait at two sizes: repetitions
        # 90..110 over 45..55, and 200..240 over 100..120.
        rows = [("BM_ForkExitWait/rss_mib:1", (45, 50, 55)),
                ("BM_ProcessStartJoin/rss_mib:1", (90, 100, 110)),
                ("BM_ForkExitWait/rss_mib:64", (100, 110, 120)),
                ("BM_ProcessStartJoin/rss_mib:64", (200, 220, 240))]
        run = history.gbench.parse_run(
            {"context": {}, "benchmarks": [entry(n, i, t) for n, ts in rows
                                           for i, t in enumerate(ts)]})
        value, count = history.headline_values(run)["ProcessStartJoin"]
        lo, hi = history.headline_spread(run)["ProcessStartJoin"]
        self.assertEqual(count, 2)
        self.assertAlmostEqual(value, 2.0)
        self.assertAlmostEqual(lo, ((90 / 55) * (200 / 120)) ** 0.5)
        self.assertAlmostEqual(hi, ((110 / 45) * (240 / 100)) ** 0.5)

    def test_every_headline_value_has_its_spread(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_runs(Path(tmp), [1.0, 1.0, 1.2])
            runs, _ = history.list_runs(Path(tmp))
            heads = history.analyse(runs)
            self.assertTrue(heads)
            for h in heads:
                self.assertEqual(len(h.lows), len(h.values))
                for v, lo, hi in zip(h.values, h.lows, h.highs):
                    if v is not None:
                        self.assertLessEqual(lo, v)
                        self.assertGreaterEqual(hi, v)
                        self.assertLess(lo, hi)

    def test_missing_dir_is_an_error(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(history.main(["--dir", "/nonexistent/runs"]), 2)
        self.assertIn("not a directory", err.getvalue())


if __name__ == "__main__":
    unittest.main()
