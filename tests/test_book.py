"""The book's housekeeping: the table of contents lists exactly the pages in book/, and every chapter is a
notebook for the python3 kernel with stored outputs and no stored error."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import toc_check  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def test_toc_lists_every_page_and_nothing_else():
    assert toc_check.problems(ROOT) == []


def test_there_are_chapters():
    assert len(CHAPTERS) >= 5


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_executed_for_python3_without_errors(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a chapter without code"
    src = lambda cell: "".join(cell["source"])  # noqa: E731 (stored as a string or a list of lines)
    assert all(c.get("execution_count") for c in code if src(c).strip()), "a code cell was never executed"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"stored error outputs: {[e.get('ename') for e in errors]}"
    text = "".join(src(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "In this chapter you will learn" in text or path.name.startswith("00_"), "no learning goals"
    assert "Exercises" in text or path.name.startswith("00_"), "no exercises"
