"""Shared by the edit scripts of issue 18: insert cells into a lab notebook, once."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell

REPO = Path(__file__).resolve().parents[1]


def md(source, grade_id=None, points=0):
    cell = new_markdown_cell(source.strip("\n"))
    if grade_id:
        cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": False, "points": points,
                                     "schema_version": 3, "solution": True, "task": False}
    return cell


def code(source, tags=()):
    cell = new_code_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def find(nb, start: str) -> int:
    hits = [i for i, c in enumerate(nb.cells) if c.source.startswith(start)]
    if len(hits) != 1:
        sys.exit(f"expected one cell starting {start!r}, found {len(hits)}")
    return hits[0]


def replace_in(nb, start: str, old: str, new: str) -> None:
    cell = nb.cells[find(nb, start)]
    if new in cell.source:
        return
    if old not in cell.source:
        sys.exit(f"cell {start!r}: {old!r} not found")
    cell.source = cell.source.replace(old, new, 1)


def edit(path: str, marker: str, apply) -> None:
    """apply(nb) unless a cell already starts with ``marker``; write the notebook back."""
    file = REPO / path
    nb = nbformat.read(file, as_version=4)
    if any(c.source.startswith(marker) for c in nb.cells):
        print(f"{path}: already has {marker!r}")
        return
    apply(nb)
    nbformat.validate(nb)
    nbformat.write(nb, file)
    print(f"{path}: edited ({len(nb.cells)} cells)")
