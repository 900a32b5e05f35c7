"""The README's measured numbers come from committed results files, measured at clean commits
(benchmarks/readme_numbers.py generates the table; these tests hold the README to it)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_numbers", REPO / "benchmarks" / "readme_numbers.py")
readme_numbers = importlib.util.module_from_spec(_spec)
sys.modules["readme_numbers"] = readme_numbers          # dataclasses look their module up there
_spec.loader.exec_module(readme_numbers)


def test_readme_holds_the_table_generated_from_the_results_files():
    text = (REPO / "README.md").read_text()
    assert readme_numbers.readme_block(text) is not None, "README.md has no generated numbers table"
    assert readme_numbers.readme_block(text) == readme_numbers.block(), \
        "README.md's numbers table differs from benchmarks/results: python benchmarks/readme_numbers.py --write"


@pytest.mark.parametrize("name", readme_numbers.quoted_files())
def test_every_quoted_results_file_records_a_clean_commit_command_and_cpu(name):
    assert readme_numbers.unfit(name, readme_numbers.load(name)) == []


def test_no_measured_number_in_the_readme_outside_the_table():
    text = (REPO / "README.md").read_text()
    in_table = set(readme_numbers.measured(readme_numbers.block()))
    stray = [n for n in readme_numbers.measured_outside_table(text) if n not in in_table]
    assert stray == [], (f"README.md states {stray} outside the generated numbers table: quote them from a results "
                         "file through benchmarks/readme_numbers.py, or move them to docs/ beside their file")


def test_the_demo_figures_describe_the_shipped_demo_model():
    from poserender.bench.environment import model_identity
    from poserender.demo import MODEL_DIR

    shipped = model_identity(MODEL_DIR)["manifest_sha256"]
    for name in ("demo_cpu.json", "demo_quality.json"):
        recorded = json.loads((readme_numbers.RESULTS / name).read_text())["model"]["manifest_sha256"]
        assert recorded == shipped, f"{name} measured another demo model than the one shipped"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The check itself: a dirty tree, a missing commit and a stray figure are each caught."""
    dirty = {"command": "python x.py", "environment": {"git": {"commit": "0" * 40, "dirty": True}, "cpu_model": "c"}}
    assert any("uncommitted" in p for p in readme_numbers.unfit("x.json", dirty))
    no_commit = {"command": "python x.py", "environment": {"git": {"commit": None, "dirty": None}, "cpu_model": "c"}}
    assert any("no git commit" in p for p in readme_numbers.unfit("x.json", no_commit))
    text = ("intro 3.5 fps and 2.38x\n```bash\nrun --fps 25 -> 99 fps\n```\n## Fidelity\nwithin 1e-4, 100 %\n"
            "## Next\n60.4 dB\n")
    assert readme_numbers.measured_outside_table(text) == ["3.5 fps", "2.38x", "60.4 dB"]
