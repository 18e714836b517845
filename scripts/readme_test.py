"""README.md's generated block and docs/results.md are what
`bazel run //scripts:report -- --update-readme` makes from the run named in
the block's begin marker: no number in them is typed by hand."""

import os
import re
import unittest
from pathlib import Path

import report

# Under bazel test the working directory is the runfiles tree of the
# workspace: README.md, docs/ and results/runs/ as in the source tree.
ROOT = Path(os.getcwd())
README_LIMIT = 12 * 1024


class ReadmeTest(unittest.TestCase):
    def setUp(self):
        self.text = (ROOT / "README.md").read_text(encoding="utf-8")

    def test_block_is_generated_from_the_committed_run(self):
        new, results, rel = report.expected_readme(ROOT, self.text)
        self.assertTrue((ROOT / rel).is_file(), rel)
        self.assertEqual(self.text, new,
                         f"README.md's report block differs from what {rel} "
                         f"generates; run: bazel run //scripts:report -- --update-readme")
        docs = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
        self.assertEqual(docs, results,
                         f"docs/results.md differs from what {rel} generates; run: "
                         f"bazel run //scripts:report -- --update-readme")

    def test_the_block_names_a_full_run(self):
        _, _, rel = report.find_block(self.text)
        run = report.gbench.load_run(ROOT / rel)
        self.assertFalse(run.mpbench.get("quick"), f"{rel} is a quick run")

    def test_every_chart_it_links_is_committed(self):
        # docs/results.md links the run's charts in results/charts (drawn by
        # bazel run //scripts:plot -- RUN.json from the same run).
        for doc in ("README.md", "docs/results.md"):
            text = (ROOT / doc).read_text(encoding="utf-8")
            links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
            if doc == "docs/results.md":
                self.assertTrue(links, "docs/results.md links no chart")
            for link in links:
                with self.subTest(doc=doc, link=link):
                    self.assertTrue((ROOT / doc).parent.joinpath(link).resolve().is_file(),
                                    f"{doc} links {link}, which is not committed; run: "
                                    f"bazel run //scripts:plot -- <the README's run>")

    def test_readme_is_short(self):
        self.assertLessEqual(len(self.text.encode("utf-8")), README_LIMIT)


if __name__ == "__main__":
    unittest.main()
