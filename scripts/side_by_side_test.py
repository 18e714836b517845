"""side_by_side on fixture files: pairing Py* with BM_* (timing suffixes and
the C++-only spin_us argument ignored), missing sides, ratios, the
interpreter share, and one combined file against two files."""

import contextlib
import io
import json
import os
import tempfile
import unittest

import gbench
import side_by_side

HERE = os.path.dirname(os.path.abspath(__file__))
CPP = os.path.join(HERE, "testdata", "py_cpp_run.json")
PY = os.path.join(HERE, "testdata", "py_python_run.json")
DASH = side_by_side.DASH


def rows_by_experiment(rows):
    out = {}
    for r in rows:
        out.setdefault(r.experiment, []).append(r)
    return out


def run_main(*args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), \
            contextlib.redirect_stderr(io.StringIO()):
        code = side_by_side.main(list(args))
    return code, buf.getvalue()


class PairingTest(unittest.TestCase):

    def setUp(self):
        self.runs = [gbench.load_run(CPP), gbench.load_run(PY)]
        self.rows = rows_by_experiment(side_by_side.pair(self.runs))

    def test_pairs_across_suffixes(self):
        [r] = self.rows["PipeThroughput/bytes:4096"]
        self.assertEqual(r.py.name, "PyPipeThroughput/bytes:4096")
        self.assertEqual(r.cpp.name, "BM_PipeThroughput/bytes:4096")
        ratio, basis = r.ratio()
        self.assertAlmostEqual(ratio, 10.0)
        self.assertEqual(basis, "time")

    def test_interpreter_share_against_raw_pipe(self):
        [r] = self.rows["PipeThroughput/bytes:4096"]
        self.assertEqual(r.raw.name, "BM_RawPipeThroughput/bytes:4096")
        self.assertAlmostEqual(r.overhead(), 1 - 320 / 4000)
        # No raw benchmark for 1 MiB: against the C++ pipe itself.
        [r] = self.rows["PipeThroughput/bytes:1048576"]
        self.assertIsNone(r.raw)
        self.assertAlmostEqual(r.overhead(), 0.5)
        # Process start+join against bare fork of the same rss.
        [r] = self.rows["ProcessStartJoin/rss_mib:64"]
        self.assertEqual(r.raw.name, "BM_ForkExitWait/rss_mib:64")
        self.assertAlmostEqual(r.overhead(), 0.75)

    def test_spin_variants_best_by_default(self):
        [r] = self.rows["QueueThroughput/bytes:64"]
        self.assertEqual(r.variant, "spin_us:50")
        self.assertAlmostEqual(r.ratio()[0], 26.0)

    def test_spin_variants_each(self):
        rows = rows_by_experiment(side_by_side.pair(self.runs, each=True))
        variants = {r.variant: r.ratio()[0]
                    for r in rows["QueueThroughput/bytes:64"]}
        self.assertEqual(set(variants), {"spin_us:0", "spin_us:50"})
        self.assertAlmostEqual(variants["spin_us:0"], 13.0)

    def test_units_normalised(self):
        [r] = self.rows["PoolMap/double/items:10000/chunksize:8/workers:2"]
        self.assertAlmostEqual(r.py.time, 25e6)
        self.assertAlmostEqual(r.cpp.time, 0.5e6)
        self.assertAlmostEqual(r.ratio()[0], 50.0)
        [r] = self.rows["ForkExitWait/rss_mib:64"]
        self.assertAlmostEqual(r.ratio()[0], 3.0)

    def test_missing_sides(self):
        [r] = self.rows["FloatChannel/doubles:100000"]
        self.assertIsNone(r.cpp)
        self.assertEqual(r.ratio(), (None, None))
        [r] = self.rows["ForkExitWait/rss_mib:2048"]
        self.assertIsNone(r.py)
        self.assertNotIn("Vfork", " ".join(self.rows))  # C++-only family

    def test_failed_cpp_side(self):
        [r] = self.rows["PipePingPong/bytes:8"]
        self.assertTrue(r.cpp.error)
        self.assertEqual(r.ratio(), (None, None))

    def test_rows_grouped_by_family(self):
        rows = side_by_side.pair(self.runs)
        fams = [r.family for r in rows]
        self.assertEqual(fams[:2], ["ForkExitWait", "ForkExitWait"])

    def test_items_basis_when_iterations_differ(self):
        """A C++ iteration of 8 messages: the time ratio is wrong by 8x, the
        rate ratio is right, and the row is marked."""
        with open(CPP) as f:
            data = json.load(f)
        for e in data["benchmarks"]:
            if e["name"].startswith("BM_PipeThroughput/bytes:4096"):
                e["real_time"] *= 8
        run = gbench.parse_run(data, "cpp")
        rows = rows_by_experiment(side_by_side.pair([run, self.runs[1]]))
        [r] = rows["PipeThroughput/bytes:4096"]
        self.assertEqual(r.ratio()[1], "items")
        self.assertAlmostEqual(r.ratio()[0], 10.0)


class MainTest(unittest.TestCase):

    def test_two_files(self):
        code, out = run_main(CPP, PY)
        self.assertEqual(code, 0)
        lines = {line.split()[0]: line for line in out.splitlines()
                 if line and not line.startswith(("files", "-", "Times"))}
        self.assertIn("PipeThroughput/bytes:4096", lines)
        self.assertRegex(lines["PipeThroughput/bytes:4096"],
                         r"4 us\s+400 ns\s+10\s+92%")
        self.assertRegex(lines["FloatChannel/doubles:100000"],
                         rf"7 ms\s+{DASH}\s+{DASH}\s+{DASH}")
        self.assertRegex(lines["ForkExitWait/rss_mib:2048"],
                         rf"{DASH}\s+9 ms")
        self.assertIn("[C++ spin_us:50]",
                      lines["QueueThroughput/bytes:64"])

    def test_one_combined_file_same_table(self):
        with open(CPP) as f:
            cpp = json.load(f)
        with open(PY) as f:
            py = json.load(f)
        combined = {"context": cpp["context"],
                    "benchmarks": cpp["benchmarks"] + py["benchmarks"]}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "run.json")
            with open(path, "w") as f:
                json.dump(combined, f)
            code, one = run_main(path)
        code2, two = run_main(CPP, PY)
        self.assertEqual((code, code2), (0, 0))
        strip = lambda s: s.split("\n", 1)[1]  # noqa: E731 - drop "files:"
        self.assertEqual(strip(one), strip(two))

    def test_markdown(self):
        code, out = run_main(CPP, PY, "--format", "markdown", "--rates",
                             "--each")
        self.assertEqual(code, 0)
        self.assertIn("| experiment | Python | C++ | Python rate | C++ rate |",
                      out)
        self.assertIn("| QueueThroughput/bytes:64 [C++ spin_us:0] |", out)

    def test_newest_runs_without_arguments(self):
        """No arguments: the newest Python run plus the newest C++ run of
        each paired family, older files of either kind ignored."""
        with tempfile.TemporaryDirectory() as tmp:
            runs = os.path.join(tmp, "results", "runs")
            os.makedirs(runs)
            for i, (src, dst) in enumerate((
                    (PY, "a-old-python.json"), (CPP, "b-old-fork.json"),
                    (CPP, "c-fork.json"), (PY, "d-python.json"))):
                with open(src) as f, open(os.path.join(runs, dst), "w") as g:
                    g.write(f.read())
                os.utime(os.path.join(runs, dst), (1000 + i, 1000 + i))
            chosen = side_by_side.newest_runs(tmp)
        self.assertEqual([os.path.basename(r.path) for r in chosen],
                         ["c-fork.json", "d-python.json"])

    def test_no_python_benchmarks(self):
        code, _ = run_main(CPP)
        self.assertEqual(code, 2)

    def test_unreadable_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.json")
            with open(path, "w") as f:
                f.write("not json {")
            code, _ = run_main(path)
            self.assertEqual(code, 2)
            code, _ = run_main(os.path.join(tmp, "missing.json"))
            self.assertEqual(code, 2)


if __name__ == "__main__":
    unittest.main()
