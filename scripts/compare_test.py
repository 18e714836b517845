"""Tests of scripts/compare.py on synthetic runs that follow the families'
name contract (scripts/synth.py) and on the bad-input fixtures."""

import contextlib
import io
import json
import tempfile
import unittest
from pathlib import Path

import compare
import gbench
import synth

TESTDATA = Path(__file__).resolve().parent / "testdata"
SPEC = synth.full_spec(small=True)


def run(seed, scale=None, reps=9, spec=SPEC, **kw):
    return gbench.parse_run(synth.make_run(spec, repetitions=reps, seed=seed,
                                           scale=scale, **kw), f"run{seed}")


def regressed(rep):
    return sorted({r.name for r in rep.rows
                   if r.gated and r.verdict in (compare.REGRESSED, compare.FAILED)})


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = compare.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


class Scenarios(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.old = run(1)

    def test_nothing_changed_raises_no_alarm(self):
        new = run(2)
        for mode in ("direct", "robust"):
            with self.subTest(mode):
                rep = compare.compare_runs(self.old, new, mode)
                self.assertEqual(regressed(rep), [])
                self.assertEqual(rep.exit_code, 0)
                self.assertAlmostEqual(rep.machine_factor, 1.0, delta=0.01)

    def test_whole_machine_20pct_slower_robust_no_alarm(self):
        new = run(3, scale={".": 1.2})
        rep = compare.compare_runs(self.old, new, "robust")
        self.assertEqual(regressed(rep), [])
        self.assertEqual(rep.exit_code, 0)
        self.assertAlmostEqual(rep.machine_factor, 1.2, delta=0.01)
        # every gated family was actually checked
        kinds = {r.kind for r in rep.rows}
        self.assertEqual(kinds, {"ratio", "machine", "family"})
        # ... while the direct mode sees the machine
        direct = compare.compare_runs(self.old, new, "direct")
        self.assertEqual(direct.exit_code, 1)
        self.assertIn("--mode=robust", compare.format_text(direct))

    def test_one_primitive_10pct_slower_alarms_exactly_it(self):
        target = "BM_PipeThroughput/bytes:4096"
        new = run(4, scale={"^" + target + "/": 1.10})
        for mode in ("direct", "robust"):
            with self.subTest(mode):
                rep = compare.compare_runs(self.old, new, mode)
                self.assertEqual(regressed(rep), [target])
                self.assertEqual(rep.exit_code, 1)
                row = next(r for r in rep.rows if r.name == target and r.metric == "time")
                self.assertAlmostEqual(row.change, 0.10, delta=0.02)
                self.assertLess(row.p, 0.01)

    def test_one_primitive_10pct_slower_on_a_20pct_slower_machine(self):
        new = run(5, scale={".": 1.2, "^BM_ProcessStartJoin/rss_mib:64/": 1.10})
        rep = compare.compare_runs(self.old, new, "robust")
        self.assertEqual(regressed(rep), ["BM_ProcessStartJoin/rss_mib:64"])

    def test_family_pooled_row_sees_a_primitive_slowdown(self):
        spec = synth.fork_spec()
        old = run(21, reps=5, spec=spec, noise=0.06)
        new = run(22, reps=5, spec=spec, noise=0.06, scale={"^BM_ProcessStartJoin": 1.10})
        rep = compare.compare_runs(old, new, "robust")
        fam = [r for r in rep.rows if r.kind == "family"]
        self.assertEqual(len(fam), 1)
        self.assertEqual(fam[0].name, "BM_ProcessStartJoin/* (6 instances)")
        self.assertEqual(fam[0].verdict, compare.REGRESSED)
        self.assertEqual(fam[0].n_new, 30)
        self.assertEqual(rep.exit_code, 1)
        # and stays quiet when nothing changed
        rep = compare.compare_runs(old, run(23, reps=5, spec=spec, noise=0.06), "robust")
        self.assertEqual(rep.exit_code, 0)

    def test_machine_normalised_family(self):
        new = run(6, scale={".": 1.2, "^BM_PoolCreate/workers:2/": 1.10})
        rep = compare.compare_runs(self.old, new, "robust")
        self.assertEqual(regressed(rep), ["BM_PoolCreate/workers:2"])

    def test_counters_are_compared_higher_is_better(self):
        new = run(7, scale={"^BM_QueueThroughput/bytes:512/spin_us:0/": 1.10})
        rep = compare.compare_runs(self.old, new, "direct")
        rows = {r.metric: r for r in rep.rows
                if r.name == "BM_QueueThroughput/bytes:512/spin_us:0"}
        self.assertEqual(rows["bytes_per_second"].verdict, compare.REGRESSED)
        self.assertLess(rows["bytes_per_second"].change, 0)
        self.assertTrue(rows["bytes_per_second"].higher_is_better)
        # a faster primitive improves, it does not regress
        faster = run(8, scale={"^BM_QueueThroughput/bytes:512/spin_us:0/": 0.8})
        rep = compare.compare_runs(self.old, faster, "direct")
        verdicts = {r.verdict for r in rep.rows
                    if r.name == "BM_QueueThroughput/bytes:512/spin_us:0"}
        self.assertEqual(verdicts, {compare.IMPROVED})
        self.assertEqual(rep.exit_code, 0)

    def test_ungated_instances_and_metrics_are_reported_not_gated(self):
        # shared-memory throughput (references.UNGATED_INSTANCES) and p99
        # (UNGATED_METRICS): in the table, never in the verdict
        name = "BM_QueueThroughput/bytes:512/spin_us:0"
        new = run(20, scale={"^" + name + "/": 1.3})
        rep = compare.compare_runs(self.old, new, "robust")
        rows = [r for r in rep.rows if r.name == name]
        self.assertTrue(rows)
        self.assertIn(compare.REGRESSED, {r.verdict for r in rows})
        self.assertFalse(any(r.gated for r in rows))
        self.assertEqual(rep.exit_code, 0)
        self.assertIn("REGRESSED (not gated)", rep.counts())
        p99 = [r for r in compare.compare_runs(self.old, run(21), "robust").rows
               if r.metric == "p99_ns"]
        self.assertTrue(p99)
        self.assertFalse(any(r.gated for r in p99))

    def test_latency_percentiles_in_robust_mode(self):
        new = run(9, scale={"^BM_ChannelPingPong/bytes:64/spin_us:0/": 1.15})
        rep = compare.compare_runs(self.old, new, "robust")
        metrics = {r.metric for r in rep.rows if r.name == "BM_ChannelPingPong/bytes:64/spin_us:0"
                   and r.verdict == compare.REGRESSED}
        self.assertEqual(metrics, {"time", "p50_ns", "p99_ns"})

    def test_python_reference_is_not_gated(self):
        new = run(10, scale={"^Py": 1.5})
        for mode in ("direct", "robust"):
            rep = compare.compare_runs(self.old, new, mode)
            self.assertEqual(rep.exit_code, 0, mode)

    def test_failure_in_new_fails(self):
        data = synth.make_run(SPEC, repetitions=9, seed=11)
        for e in data["benchmarks"]:
            if e["run_name"].startswith("BM_PipeThroughput/bytes:8/"):
                e["error_occurred"] = True
                e["error_message"] = "pipe: EMFILE"
        rep = compare.compare_runs(self.old, gbench.parse_run(data), "direct")
        self.assertEqual(regressed(rep), ["BM_PipeThroughput/bytes:8"])
        self.assertTrue(any("EMFILE" in w for w in rep.warnings))

    def test_too_few_repetitions_everywhere_is_an_error_not_a_pass(self):
        spec = synth.fork_spec()
        a, b = run(1, reps=3, spec=spec), run(2, reps=3, spec=spec)
        rep = compare.compare_runs(a, b, "robust", pooled=False)
        self.assertEqual(rep.exit_code, 2)
        self.assertIn("smallest p possible is 0.1", rep.errors[0])
        rep = compare.compare_runs(a, b, "robust", allow_underpowered=True,
                                   pooled=False)
        self.assertEqual(rep.exit_code, 0)
        self.assertTrue(any("never fail" in w or "Nothing gated" in w
                            for w in rep.warnings))
        self.assertIn(compare.TOO_FEW, {r.verdict for r in rep.rows})

    def test_underpowered_rows_reported_while_the_rest_is_compared(self):
        # 3 repetitions a row (a full run's pool family): single rows cannot
        # reach p < 0.05, the pooled family rows can; the comparison goes on.
        spec = synth.fork_spec()
        a, b = run(1, reps=3, spec=spec), run(2, reps=3, spec=spec)
        rep = compare.compare_runs(a, b, "robust")
        self.assertEqual(rep.exit_code, 0, rep.errors)
        few = [r for r in rep.rows if r.verdict == compare.TOO_FEW]
        tested = [r for r in rep.rows if r.p is not None]
        self.assertTrue(few and tested)
        self.assertTrue(all(r.kind == "family" for r in tested))
        self.assertTrue(any("too few repetitions" in w for w in rep.warnings))
        # ... and a real slowdown of the family is still caught
        c = run(3, reps=3, spec=spec, scale={"ProcessStartJoin": 1.3})
        rep = compare.compare_runs(a, c, "robust")
        self.assertEqual(rep.exit_code, 1)

    def test_filter_limits_the_comparison(self):
        new = run(4, scale={"PipeThroughput": 1.3})
        rep = compare.compare_runs(self.old, new, "direct", name_filter="^BM_Queue")
        self.assertTrue(rep.rows)
        self.assertTrue(all(r.name.startswith("BM_Queue") for r in rep.rows))
        self.assertEqual(regressed(rep), [])
        with self.assertRaises(compare.CompareError):
            compare.compare_runs(self.old, new, "direct", name_filter="^nothing$")

    def test_changes_only_lists_significant_changes_alone(self):
        new = run(5, scale={"PipeThroughput": 1.3})
        rep = compare.compare_runs(self.old, new, "direct")
        text = compare.format_text(rep, all_rows=False)
        table = [l for l in text.splitlines() if l.startswith("BM_")]
        self.assertTrue(table)
        for line in table:
            self.assertRegex(line, r"(REGRESSED|improved|FAILED)")
        md = compare.format_markdown(rep, changes_only=True)
        self.assertIn("#### Regressions", md)
        self.assertNotIn("all other comparisons", md)
        self.assertNotIn("| same", md)

    def test_markdown_regressions_first_by_size(self):
        new = run(6, scale={"PipeThroughput/bytes:8": 1.2,
                            "PipeThroughput/bytes:4096": 1.6})
        md = compare.format_markdown(compare.compare_runs(self.old, new, "direct"))
        first = md.index("BM_PipeThroughput/bytes:4096")
        self.assertLess(first, md.index("BM_PipeThroughput/bytes:8`"))
        self.assertLess(md.index("#### Regressions"), md.index("all other comparisons"))

    def test_markdown_bound_on_the_largest_committed_run(self):
        runs = sorted((Path(__file__).resolve().parent.parent / "results" / "runs")
                      .glob("*.json"), key=lambda p: p.stat().st_size)
        self.assertTrue(runs, "no committed run in results/runs")
        big = gbench.load_run(runs[-1])
        for mode in ("direct", "robust"):
            for changes_only in (False, True):
                with self.subTest(mode=mode, changes_only=changes_only):
                    rep = compare.compare_runs(big, big, mode)
                    md = compare.format_markdown(rep, changes_only=changes_only)
                    self.assertLessEqual(len(md), compare.MARKDOWN_LIMIT)
                    self.assertIn("No benchmark regression", md)
        # a tiny limit still yields a bounded, well-formed comment
        md = compare.format_markdown(rep, limit=3000)
        self.assertLessEqual(len(md), 3000)
        self.assertIn("left out", md)

    def test_family_of_a_counter_that_stays_zero_is_not_pooled(self):
        # Every instance's minor_faults is 0 in every repetition (a warmed-up
        # pool): there is no ratio to pool, and no crash on an empty family.
        spec = {f"BM_ThreadPoolMap/double/items:{n}/chunksize:8/workers:2/real_time":
                (1000.0 * n, {"minor_faults": 0.0, "items_per_second": 1e6 / n})
                for n in (1, 10, 100)}
        old = run(60, spec=spec, reps=5)
        new = run(61, spec=spec, reps=5)
        rep = compare.compare_runs(old, new, "direct")
        self.assertEqual(rep.exit_code, 0)
        fam = [r for r in rep.rows if r.kind == "family"]
        self.assertTrue(fam)  # time and items_per_second are pooled
        self.assertFalse([r for r in fam if r.metric == "minor_faults"])

    def test_min_p_value(self):
        self.assertAlmostEqual(compare.min_p_value(3, 3), 0.1)
        self.assertLess(compare.min_p_value(4, 4), 0.05)
        self.assertEqual(compare._needed_repetitions(0.05), 4)

    def test_fingerprint_difference_warns(self):
        new = run(12, context={"mpbench": {"fingerprint": dict(
            synth.FINGERPRINT, cpu_model="Other CPU")}})
        rep = compare.compare_runs(self.old, new, "robust")
        text = compare.format_text(rep)
        self.assertIn("MACHINE FINGERPRINTS DIFFER", text)
        self.assertIn("Other CPU", text)

    def test_formats(self):
        new = run(4, scale={"^BM_PipeThroughput/bytes:4096/": 1.10})
        rep = compare.compare_runs(self.old, new, "robust")
        md = compare.format_markdown(rep)
        self.assertIn("| benchmark |", md)
        self.assertIn("**REGRESSED**", md)
        self.assertIn("<details>", md)
        js = json.loads(compare.format_json(rep))
        self.assertEqual(js["exit_code"], 1)
        self.assertEqual(js["mode"], "robust")
        self.assertTrue(any(r["verdict"] == "REGRESSED" for r in js["rows"]))


class PooledBaseline(unittest.TestCase):
    """A baseline pooled from several runs knows each benchmark's run-to-run
    noise and alarms only beyond it."""

    SPEC = {**synth.fork_spec(), **synth.ipc_spec()}

    def baseline(self, unstable=1.0):
        import baseline as baseline_mod
        runs = []
        for i in range(3):
            # BM_QueuePingPong/bytes:64/spin_us:50 wobbles by `unstable`
            # from run to run; everything else is steady
            scale = {"^BM_QueuePingPong/bytes:64/spin_us:50/": unstable ** i}
            runs.append(synth.make_run(self.SPEC, repetitions=5, seed=30 + i, scale=scale))
        pooled = baseline_mod.pool_sources(runs)
        return gbench.parse_run(pooled, "baseline")

    def test_pooled_file(self):
        base = self.baseline()
        self.assertEqual(base.sources, 3)
        self.assertEqual(len(base.samples("BM_ForkExitWait")), 15)
        self.assertEqual(sorted(base.samples_by_source("BM_ForkExitWait")), [0, 1, 2])

    def test_unstable_benchmark_does_not_alarm_within_its_noise(self):
        base = self.baseline(unstable=1.3)  # medians 1, 1.3, 1.69
        name = "BM_QueuePingPong/bytes:64/spin_us:50"
        new = run(40, reps=5, spec=self.SPEC, scale={"^" + name + "/": 1.69})
        rep = compare.compare_runs(base, new, "robust")
        rows = [r for r in rep.rows if r.name == name and r.kind == "ratio"]
        self.assertTrue(rows)
        for r in rows:
            self.assertGreater(r.tolerance, 100)  # 1.5 x 69% spread
            self.assertNotEqual(r.verdict, compare.REGRESSED)
        self.assertEqual(rep.exit_code, 0)
        self.assertIn("OLD pools 3 runs", compare.format_text(rep))

    def test_steady_benchmark_still_alarms(self):
        base = self.baseline(unstable=1.3)
        target = "BM_PipeThroughput/bytes:4096"
        new = run(41, reps=5, spec=self.SPEC, scale={"^" + target + "/": 1.10})
        rep = compare.compare_runs(base, new, "robust")
        self.assertEqual(regressed(rep), [target])


    def test_noise_from_a_baseline_covers_two_single_runs(self):
        # Two single runs of the same build whose unstable benchmark landed
        # 1.3x apart: their repetitions cannot tell that from a regression,
        # the baseline's run-to-run spread can.
        base = self.baseline(unstable=1.3)
        name = "BM_QueuePingPong/bytes:64/spin_us:50"
        a = run(42, reps=9, spec=self.SPEC)
        b = run(43, reps=9, spec=self.SPEC, scale={"^" + name + "/": 1.3})
        self.assertIn(name, regressed(compare.compare_runs(a, b, "robust")))
        rep = compare.compare_runs(a, b, "robust", noise=base)
        self.assertEqual(regressed(rep), [])
        self.assertIn(compare.WITHIN_NOISE,
                      {r.verdict for r in rep.rows if r.name == name})
        self.assertIn("run-to-run noise from baseline (3 runs)",
                      compare.format_text(rep))
        # ... and a steady benchmark 10% slower still alarms.
        target = "BM_PipeThroughput/bytes:4096"
        c = run(44, reps=9, spec=self.SPEC, scale={"^" + target + "/": 1.10})
        self.assertEqual(
            regressed(compare.compare_runs(a, c, "robust", noise=base)), [target])

    def test_noise_from_a_single_run_is_refused(self):
        with self.assertRaises(compare.CompareError):
            compare.compare_runs(run(45, reps=5, spec=self.SPEC),
                                 run(46, reps=5, spec=self.SPEC), "robust",
                                 noise=run(47, reps=5, spec=self.SPEC))


class Confirm(unittest.TestCase):
    """--confirm: an alarm counts only if a second run raises it too."""

    def test_alarm_in_one_run_only_is_not_a_regression(self):
        old = run(50)
        noisy = "BM_PipeThroughput/bytes:4096"
        first = run(51, scale={"^" + noisy + "/": 1.3})
        rep = compare.compare_runs(old, first, "robust")
        self.assertEqual(regressed(rep), [noisy])
        compare.confirm(rep, compare.compare_runs(old, run(52), "robust"))
        self.assertEqual(regressed(rep), [])
        self.assertEqual(rep.exit_code, 0)
        self.assertIn(compare.NOT_REPRODUCED, {r.verdict for r in rep.rows})

    def test_alarm_in_both_runs_fails(self):
        old = run(53)
        target = "BM_PipeThroughput/bytes:4096"
        slow = {"^" + target + "/": 1.1}
        rep = compare.compare_runs(old, run(54, scale=slow), "robust")
        compare.confirm(rep, compare.compare_runs(old, run(55, scale=slow),
                                                  "robust"))
        self.assertEqual(regressed(rep), [target])
        self.assertEqual(rep.exit_code, 1)
        self.assertIn("confirmed with run55", compare.format_text(rep))


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.good = Path(self.tmp.name) / "good.json"
        self.good.write_text(json.dumps(synth.make_run(synth.fork_spec(), repetitions=5)))

    def test_bad_inputs_exit_2_without_traceback(self):
        cases = [
            (TESTDATA / "not_json.json", "not JSON"),
            (TESTDATA / "truncated.json", "truncated"),
            (TESTDATA / "no_benchmarks.json", "no 'benchmarks'"),
            (TESTDATA / "other_names.json", "no benchmark in common"),
            (TESTDATA / "single_rep.json", "too few repetitions"),
            (Path(self.tmp.name) / "missing.json", "no such file"),
        ]
        for path, words in cases:
            with self.subTest(path.name):
                code, out, err = cli(self.good, path)
                self.assertEqual(code, 2)
                self.assertIn(words, err)
                self.assertNotIn("Traceback", err)

    def test_same_file_passes(self):
        code, out, _ = cli(self.good, self.good, "--mode", "robust")
        self.assertEqual(code, 0)
        self.assertIn("RESULT: no regression", out)

    def test_real_fork_runs(self):
        code, out, _ = cli(TESTDATA / "fork_quick.json", TESTDATA / "fork_quick.json",
                           "--mode", "robust", "--format", "markdown")
        self.assertEqual(code, 0)
        self.assertIn("BM_ProcessStartJoin/rss_mib:64", out)

    def test_output_file(self):
        dest = Path(self.tmp.name) / "report.md"
        code, out, _ = cli(self.good, self.good, "--format", "markdown", "--output", dest)
        self.assertEqual(code, 0)
        self.assertEqual(dest.read_text().strip(), out.strip())


if __name__ == "__main__":
    unittest.main()
