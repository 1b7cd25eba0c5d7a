"""No sentence of a lab notebook names a value that an edition of the course changes: such a value is
printed by the run (or named by its parameter), so that the text holds for every edition. (The book's
worked examples compute with example values; its results page is generated from the runs.)"""
import json
import re
from pathlib import Path

import pytest

from labkit import course

REPO = Path(__file__).resolve().parents[1]
TEXTS = sorted((REPO / "labs").glob("*.ipynb"))


def _changed_values() -> set[float]:
    editions = list(course.EDITIONS.values())
    out = set()
    for field in ("qs", "target", "lab4_sparsities"):
        seen = [set(getattr(e, field)) if isinstance(getattr(e, field), tuple) else {getattr(e, field)} for e in editions]
        out |= set.union(*seen) - set.intersection(*seen)
    return out


def _forms(v: float) -> list[str]:
    percent = f"{v * 100:g}"
    return [rf"(?<![\d.]){re.escape(f'{v:g}')}0*(?![\d])", rf"(?<![\d.]){re.escape(percent)}\s?%"]


def _markdown(path: Path) -> list[tuple[str, str]]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(f"{path.name} cell {i}", "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]


def find_edition_values(text: str, values) -> list[str]:
    """The passages of ``text`` that name one of ``values`` (as 0.8, 0.80, 80 %, 80% or 80 with a
    non-breaking space), formulas included."""
    hits = []
    for v in values:
        for form in _forms(v):
            hits += [text[max(0, m.start() - 50): m.end() + 30].replace("\n", " ") for m in re.finditer(form, text)]
    return hits


def test_the_editions_differ_in_the_values_the_check_looks_for():
    assert {0.4, 0.6, 0.8, 0.3, 0.5, 0.7} <= _changed_values()


def test_the_check_finds_a_typed_value():
    assert find_edition_values("at 80 % sparsity the model", {0.8})
    assert find_edition_values("pruned with q = 0.8 here", {0.8})
    assert find_edition_values("a formula $q = 0.8$", {0.8}) and find_edition_values("at 0.80 here", {0.8})
    assert find_edition_values("at 80\u00a0% sparsity", {0.8})
    assert not find_edition_values("1.80, 180 %, 0.85 and 80.5 %", {0.8})


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_no_text_names_a_value_an_edition_changes(path):
    hits = [f"{where}: ...{h}..." for where, text in _markdown(path) for h in find_edition_values(text, _changed_values())]
    assert not hits, "these passages name a value that LABKIT_COURSE changes; print it from the run or name its " \
                     "parameter:\n" + "\n".join(hits)
