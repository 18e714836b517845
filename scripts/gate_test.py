"""Tests of scripts/gate.py without Bazel: fake family binaries (small
Python programs that write synthetic Google Benchmark JSON, scripts/synth.py)
stand in for the two builds, so the interleaving, the decision and the
confirmation run are tested as the gate runs them."""

import json
import os
import stat
import subprocess
import sys
import tempfile
import unittest
from unittest import mock
from pathlib import Path

import ab
import compare
import gate
import gbench
import suite
import synth

HERE = Path(__file__).resolve().parent

FAKE = """#!{python}
# A stand-in for a benchmark binary: logs its call, writes a synthetic run.
import json, random, sys
sys.path.insert(0, {scripts!r})
import synth
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
if "--help" in sys.argv:
    print("--benchmark_enable_random_interleaving")
    sys.exit(0)
with open({log!r}, "a") as f:
    f.write({label!r} + "\\n")
calls = sum(1 for _ in open({log!r}))
spec = synth.{spec}()
scale = {scale!r}
# A slowdown that shows only in some measurements (a neighbour's burst):
# the first `flaky` calls of this side are slow.
if calls <= {flaky}:
    scale = dict(scale, **{{".": 1.5}})
data = synth.make_run(spec, repetitions=int(args["--benchmark_repetitions"]),
                      noise=0.01, seed=random.randrange(1 << 30), scale=scale)
json.dump(data, open(args["--benchmark_out"], "w"))
"""


class Fakes:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = tmp / "calls.log"

    def side(self, label: str, spec: str = "ipc_spec", scale=None,
             flaky: int = 0) -> ab.Side:
        path = self.tmp / f"{label}-ipc"
        path.write_text(FAKE.format(python=sys.executable, scripts=str(HERE),
                                    log=str(self.log), label=label, spec=spec,
                                    scale=scale or {}, flaky=flaky))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return ab.Side(label, {"ipc": path}, {"commit_short": label})


def args(**kw):
    a = gate.build_parser().parse_args([])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def measure_and_judge(base, head, tmp, a):
    """What gate.main does after the build: measure, and measure again on an
    alarm; returns (report, number of measurements)."""
    reports = []
    for attempt in ("", "confirm-"):
        gate.measure(base, head, ["ipc"], a, {"ipc": None}, tmp, attempt)
        paths = {s.label: ab.write_side(s, tmp / f"{attempt}{s.label}.json", {})
                 for s in (base, head)}
        reports.append(gate.judge(paths, a))
        if reports[-1].exit_code != 1 or a.no_confirm:
            break
    rep = reports[0]
    if len(reports) == 2:
        compare.confirm(rep, reports[1])
    return rep, len(reports)


def regressed(rep):
    return sorted({r.name for r in rep.rows
                   if r.gated and r.verdict == compare.REGRESSED})


class GateDecisions(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.fakes = Fakes(self.tmp)

    def tearDown(self):
        self._tmp.cleanup()

    def test_same_build_passes(self):
        rep, n = measure_and_judge(self.fakes.side("base"), self.fakes.side("head"),
                                   self.tmp, args())
        self.assertEqual(rep.exit_code, 0, compare.format_text(rep, False))
        self.assertEqual(n, 1)

    def test_sides_alternate_a_b_b_a(self):
        measure_and_judge(self.fakes.side("base"), self.fakes.side("head"),
                          self.tmp, args(rounds=4))
        order = self.fakes.log.read_text().split()
        self.assertEqual(order, ["base", "head", "head", "base",
                                 "base", "head", "head", "base"])

    def test_slower_pipe_is_caught_and_named(self):
        rep, n = measure_and_judge(
            self.fakes.side("base"),
            self.fakes.side("head", scale={"BM_Pipe(Throughput|PingPong)": 1.05}),
            self.tmp, args())
        self.assertEqual(rep.exit_code, 1)
        self.assertEqual(n, 2)  # confirmed by a second measurement
        names = regressed(rep)
        self.assertTrue(names)
        for name in names:
            self.assertRegex(name, r"^BM_Pipe(Throughput|PingPong)")

    def test_raw_mechanisms_are_reported_not_gated(self):
        rep, _ = measure_and_judge(
            self.fakes.side("base"),
            self.fakes.side("head", scale={"BM_RawPipe": 1.3}), self.tmp, args())
        self.assertEqual(rep.exit_code, 0)
        raw = [r for r in rep.rows if r.name.startswith("BM_RawPipeThroughput/")]
        self.assertTrue(raw and not any(r.gated for r in raw))

    def test_alarm_in_one_measurement_only_is_not_confirmed(self):
        # the head side is slow in its first two calls (the first
        # measurement's rounds) and normal afterwards
        rep, n = measure_and_judge(self.fakes.side("base"),
                                   self.fakes.side("head", flaky=2), self.tmp,
                                   args(rounds=2))
        self.assertEqual(n, 2)
        self.assertEqual(rep.exit_code, 0)
        self.assertIn(compare.NOT_REPRODUCED, {r.verdict for r in rep.rows})


class GateBuilds(unittest.TestCase):
    def test_both_sides_get_the_layout_flags_and_only_head_the_injection(self):
        built = {}

        def build_families(bazel, root, families, build_flags=None):
            built[str(root)] = list(build_flags or [])
            return {f: Path(sys.executable) for f in families}, "/nonexistent"

        with tempfile.TemporaryDirectory() as tmp, \
                mock.patch.object(ab, "export_rev"), \
                mock.patch.object(suite, "existing_families",
                                  lambda bazel, root, fams: (list(fams), [])), \
                mock.patch.object(suite, "build_families", build_families), \
                mock.patch.object(ab.machine, "collect", return_value={}), \
                mock.patch.object(ab.subprocess, "run"):
            inject = suite.inject_build_flags("pipe=1.05")
            ab.prepare(Path("/head"), "base-rev", Path("/base"), ["bazel"],
                       ["ipc"], Path(tmp), head_flags=inject)
        self.assertEqual(built["/base"], suite.LAYOUT_FLAGS)
        self.assertEqual(built["/head"], suite.LAYOUT_FLAGS + inject)
        self.assertIn("--copt=-falign-functions=64", suite.LAYOUT_FLAGS)


class GateCommandLine(unittest.TestCase):
    def test_inject_spec(self):
        self.assertEqual(suite.inject_build_flags("pipe=1.05"),
                         ["--define=mpbench_inject=pipe",
                          "--define=mpbench_inject_factor=1.05"])
        self.assertEqual(suite.inject_build_flags(None), [])
        for bad in ("pipe", "pipe=0.9", "pipe=x", "disk=1.1", "=1.1"):
            with self.subTest(bad), self.assertRaises(suite.SuiteError):
                suite.inject_build_flags(bad)

    def run_gate(self, repo: Path, *argv):
        env = dict(os.environ, BUILD_WORKSPACE_DIRECTORY=str(repo))
        return subprocess.run([sys.executable, str(HERE / "gate.py"), *argv],
                              env=env, capture_output=True, text=True, timeout=120)

    def make_repo(self, commits: int) -> Path:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        repo = Path(tmp.name)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        for i in range(commits):
            (repo / "f").write_text(str(i))
            subprocess.run(git + ["add", "f"], cwd=repo, check=True)
            subprocess.run(git + ["commit", "-qm", f"c{i}"], cwd=repo, check=True)
        return repo

    def test_first_commit_passes_saying_why(self):
        r = self.run_gate(self.make_repo(1))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no parent commit", r.stdout)

    def test_unknown_revision_is_unusable_input(self):
        r = self.run_gate(self.make_repo(2), "--base", "no-such-rev")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a revision", r.stderr)

    def test_bad_flags_are_unusable_input(self):
        repo = self.make_repo(2)
        for argv in (["--inject", "pipe"], ["--families", "disk"], ["--rounds", "1"]):
            with self.subTest(argv):
                r = self.run_gate(repo, *argv)
                self.assertEqual(r.returncode, 2)
                self.assertIn("gate: error:", r.stderr)
                self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
    unittest.main()
