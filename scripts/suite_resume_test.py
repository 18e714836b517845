"""An interrupted suite run (SIGINT during the second family) keeps the
first family's results, says where, and `--resume` completes it into one
run file. Bazel and the family binaries are stand-ins (fake_bazel below
and a small Google Benchmark imitation) so that the test runs in seconds;
everything else is scripts/suite.py as scripts/bench runs it."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

import gbench

HERE = Path(__file__).resolve().parent
SUITE = HERE / "suite.py"

FAKE_BAZEL = textwrap.dedent("""\
    #!{python}
    import os, sys
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "query":
        print("//bench:fork\\n//bench:ipc")
    elif cmd == "info":
        print(os.environ["FAKE_BAZEL_BIN"])
    """)

# Writes Google Benchmark's JSON for two benchmarks of its family, with
# the repetitions asked for; the family named in FAKE_SLOW_FAMILY first
# sleeps long enough to be interrupted.
FAKE_BENCH = textwrap.dedent("""\
    #!{python}
    import json, os, sys, time
    family = os.path.basename(sys.argv[0])
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
    if "--help" in sys.argv:
        print("--benchmark_enable_random_interleaving"); sys.exit(0)
    if args.get("benchmark_list_tests") == "true":
        print(f"BM_{{family}}A\\nBM_{{family}}B"); sys.exit(0)
    if os.environ.get("FAKE_SLOW_FAMILY") == family:
        open(os.environ["FAKE_STARTED"], "w").close()
        time.sleep(60)
    reps = int(args.get("benchmark_repetitions", "1"))
    entries = []
    for name in (f"BM_{{family}}A", f"BM_{{family}}B"):
        for i in range(reps):
            entries.append({{"name": name, "run_name": name, "run_type": "iteration",
                             "repetitions": reps, "repetition_index": i,
                             "iterations": 10, "real_time": 100.0 + i,
                             "cpu_time": 90.0, "time_unit": "ns"}})
    json.dump({{"context": {{"num_cpus": 2}}, "benchmarks": entries}},
              open(args["benchmark_out"], "w"))
    """)


class InterruptAndResume(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="suite-resume-"))
        bin_dir = self.tmp / "bazel-bin"
        (bin_dir / "bench").mkdir(parents=True)
        for fam in ("fork", "ipc"):
            p = bin_dir / "bench" / fam
            p.write_text(FAKE_BENCH.format(python=sys.executable))
            p.chmod(0o755)
        bazel = self.tmp / "fake_bazel"
        bazel.write_text(FAKE_BAZEL.format(python=sys.executable))
        bazel.chmod(0o755)
        self.results = self.tmp / "results"
        self.env = dict(os.environ, FAKE_BAZEL_BIN=str(bin_dir),
                        FAKE_STARTED=str(self.tmp / "started"))
        self.env.pop("BUILD_WORKSPACE_DIRECTORY", None)
        self.cmd = [sys.executable, str(SUITE), "--bazel", str(bazel),
                    "--results-dir", str(self.results), "--no-plot", "--no-report"]

    def test_sigint_in_second_family_then_resume(self):
        p = subprocess.Popen(self.cmd + ["--families", "fork,ipc", "--no-python",
                                         "--repetitions", "4"],
                             env=dict(self.env, FAKE_SLOW_FAMILY="ipc"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (self.tmp / "started").exists():
            self.assertIsNone(p.poll(), p.stderr.read() if p.poll() is not None else "")
            self.assertLess(time.monotonic(), deadline, "ipc never started")
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 130, err)
        self.assertEqual(out, "")  # no run file path: there is no complete run
        self.assertIn("[1/2] fork", err)
        self.assertIn("[2/2] ipc", err)
        self.assertIn("scripts/bench --resume", err)
        self.assertFalse((self.results / "runs").exists()
                         and list((self.results / "runs").glob("*.json")))
        partial = list((self.results / "partial").iterdir())
        self.assertEqual(len(partial), 1)
        self.assertIn(str(partial[0]), err)
        kept = gbench.load_run(partial[0] / "partial-run.json")
        self.assertEqual(kept.names(), ["BM_forkA", "BM_forkB"])
        self.assertEqual(len(kept.samples("BM_forkA")), 4)

        # --resume: only ipc runs, with the interrupted run's options.
        r = subprocess.run(self.cmd + ["--resume"], env=self.env, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("already complete: fork", r.stderr)
        self.assertNotIn("[1/2] fork", r.stderr)
        self.assertIn("[2/2] ipc", r.stderr)
        run_path = Path(r.stdout.strip())
        self.assertEqual(run_path.parent, self.results / "runs")
        run = gbench.load_run(run_path)
        self.assertEqual(run.names(), ["BM_forkA", "BM_forkB", "BM_ipcA", "BM_ipcB"])
        for name in run.names():
            self.assertEqual(len(run.samples(name)), 4)
        m = run.mpbench
        self.assertTrue(m["resumed"])
        self.assertEqual([f["family"] for f in m["families"]], ["fork", "ipc"])
        self.assertIn("--repetitions 4", m["command"])
        data = json.loads(run_path.read_text())
        self.assertEqual({e["mpbench_family"] for e in data["benchmarks"]}, {"fork", "ipc"})
        self.assertEqual(list((self.results / "partial").iterdir()), [])
        self.assertEqual(list((self.results / "runs").glob("*.json")), [run_path])

        # A second run on this machine estimates from the first, and ends
        # with its report (tables only: --no-plot).
        cmd = [c for c in self.cmd if c != "--no-report"]
        r = subprocess.run(cmd + ["--families", "fork", "--no-python", "--repetitions", "4"],
                           env=self.env, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r"\[1/1\] fork .* ETA \d\d:\d\d "
                                   r"\(from the previous run here\)\n")
        second = Path(r.stdout.strip())
        page = self.results / "reports" / second.stem / "index.html"
        self.assertIn(f"report: {page}", r.stderr)
        self.assertIn("BM_forkA", page.read_text())

    def test_nothing_to_resume(self):
        r = subprocess.run(self.cmd + ["--resume"], env=self.env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("nothing to resume", r.stderr)


if __name__ == "__main__":
    unittest.main()
