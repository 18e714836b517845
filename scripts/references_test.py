"""scripts/references.py against the rows the bench binaries register: the
grids live in bench/*.cc only, so this is where a rule that names a row no
binary has, or a quick selection that leaves out a reference its rows are
compared with, is caught. Runs each binary with --benchmark_list_tests
(nothing is measured)."""

import os
import re
import subprocess
import unittest
from pathlib import Path

import gbench
import references
import suite

# Under bazel test the working directory is the workspace's runfiles tree.
ROOT = Path(os.getcwd())


def listed(family: str) -> list[str]:
    binary = ROOT / "bench" / family
    r = subprocess.run([str(binary), "--benchmark_list_tests=true"], capture_output=True,
                       text=True, timeout=60, check=True)
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]


class DeclarationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.full = {f: listed(f) for f in suite.FAMILIES}
        cls.names = {gbench.base_name(n) for rows in cls.full.values() for n in rows}

    def test_every_reference_is_a_registered_row(self):
        missing = []
        for name in sorted(self.names):
            for ref, r in references.references(name, self.names.__contains__):
                if r not in self.names:
                    missing.append(f"{name} -> {r}")
        self.assertEqual(missing, [], "references.py names rows no binary registers")

    def test_every_rule_and_partial_reference_is_used(self):
        families = {gbench.parse_name(n).family for n in self.names}
        for rule in references.RULES:
            with self.subTest(rule.family):
                self.assertIn(rule.family, families)
                for ref in rule.refs:
                    self.assertIn(ref.family, families)
        # the raw ring pool is a reference where it is registered
        used = {r for n in self.names for _, r in references.references(n, self.names.__contains__)
                if gbench.parse_name(r).family == "RawRingPoolMap"}
        raw = {n for n in self.names if gbench.parse_name(n).family == "RawRingPoolMap"}
        self.assertTrue(raw)
        self.assertEqual(raw - used, set(), "raw ring rows no pool row is measured against")

    def test_quick_selections_hold_their_references(self):
        for family in suite.FAMILIES:
            pattern = suite.FAMILY_SETTINGS.get(family, {}).get("quick", {}).get("filter")
            if not pattern:
                continue
            with self.subTest(family):
                rows = self.full[family]
                chosen = {gbench.base_name(n) for n in rows if re.search(pattern, n)}
                self.assertTrue(chosen)
                registered = {gbench.base_name(n) for n in rows}
                lacking = sorted(f"{n} -> {r}" for n in chosen
                                 for _, r in references.references(n, registered.__contains__)
                                 if r in registered and r not in chosen)
                self.assertEqual(lacking, [], "the quick filter leaves out references "
                                 "of rows it runs")


if __name__ == "__main__":
    unittest.main()
