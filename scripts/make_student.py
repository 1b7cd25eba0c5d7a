"""Write the student edition of the labs, student/<lab>.ipynb, from the solved notebooks in labs/,
and student/concepts.ipynb, the ten concepts of book/concepts.md with an answer cell each.

    python scripts/make_student.py            # (re)write student/*.ipynb
    python scripts/make_student.py --check    # exit 1 if student/ is not what this writes

The solved notebooks carry nbgrader's cell metadata (book/handouts.md): an exercise is a code cell
with ``solution: true`` whose solution lies between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
its self-check is the next cell, ``grade: true`` with the part's points, whose hidden tests lie between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``; a written answer is a markdown cell with
``solution: true`` (and ``grade: true`` with its points when the assignment grades it).

The student notebook is made by nbgrader's own preprocessors, the ones of ``nbgrader
generate_assignment`` without the gradebook (``SaveCells``): solutions become ``# YOUR CODE HERE`` /
``raise NotImplementedError()``, answers ``YOUR ANSWER HERE``, hidden tests and every output are
removed, graded cells are locked and checksummed. So the files are valid nbgrader source notebooks:
an instructor with an nbgrader course can take them as they are. One cell is added at the top: it
installs labkit when it is missing (Colab, Binder: from the repository named in _config.yml) and
sets the run's profile, quick (the CI profile) unless the student switches it off.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
LABS = REPO / "labs"
STUDENT = REPO / "student"
SETUP_ID = "labkit-setup"
STORED = re.compile(r"^The outputs below come from one real (?:reference )?run.*?(?:\n\n|\Z)", re.M | re.S)
SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n.*?^[ \t]*### END HIDDEN TESTS[ \t]*(\n|\Z)", re.M | re.S)


def repository() -> str:
    """The course's repository, from _config.yml (``repository: url:``)."""
    text = (REPO / "_config.yml").read_text(encoding="utf-8")
    found = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, flags=re.M)
    if not found:
        raise ValueError("_config.yml names no repository url (repository: url: ...); the student "
                         "notebooks install labkit from it")
    return found.group(1)


def setup_cell() -> nbformat.NotebookNode:
    source = f'''# Setup: installs labkit when it is missing (Colab, Binder), then picks how long the lab runs.
import importlib.util, os
if importlib.util.find_spec("labkit") is None:
    %pip install --quiet "labkit @ git+{repository()}"
QUICK = True   # True: the quick run (minutes: fewer epochs and images, iterative pruning in one step); False: the full run
os.environ["LABKIT_PROFILE"] = "ci" if QUICK else "full"'''
    cell = nbformat.v4.new_code_cell(source)
    cell.id = SETUP_ID
    return cell


def _preprocessors():
    from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                        ClearSolutions, ComputeChecksums, LockCells)
    # generate_assignment's list, in its order, without the gradebook's SaveCells (and without
    # IncludeHeaderFooter and InstantiateTests, which have nothing to do here)
    return [LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
            ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata]


def student_edition(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student notebook of a solved one (which is not changed)."""
    from nbconvert.exporters import NotebookExporter
    from traitlets.config import Config

    exporter = NotebookExporter(config=Config())
    for pre in _preprocessors():
        exporter.register_preprocessor(pre(), enabled=True)
    body, _ = exporter.from_notebook_node(copy.deepcopy(nb), resources={"nbgrader": {"notebook": name,
                                                                                    "assignment": name}})
    out = nbformat.reads(body, as_version=4)
    out.metadata.pop("widgets", None)                 # the solved run's widget state (a rendered plot)
    for cell in out.cells:                            # the solved edition's words about its stored outputs
        if cell.cell_type == "markdown":
            cell.source = STORED.sub("", cell.source).rstrip()
    out.cells.insert(0, setup_cell())
    for cell in out.cells:
        cell.metadata.pop("execution", None)          # the solved run's timestamps
        if cell.cell_type == "code":
            cell.execution_count = None
    return out


def solutions_view(source: str) -> str:
    """A solved cell's source as the solutions site shows it: no solution markers, no hidden tests."""
    return SOLUTION.sub("", HIDDEN.sub("", source)).rstrip("\n")


def concepts_notebook() -> nbformat.NotebookNode:
    """The ten concepts of book/concepts.md as a student notebook: each statement, then an answer
    cell (True or False, and the reason) worth 2 points, graded by hand (grade ids concept_1..10).
    The answers stay on the book's page; here the cells are empty."""
    text = (REPO / "book" / "concepts.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (\d+)\. (.+)\n\n((?:> .*\n)+)", text, flags=re.M)
    if len(sections) != 10:
        raise ValueError(f"book/concepts.md: expected 10 concepts ('## N. title' then a '> ' statement), "
                         f"found {len(sections)}")
    cells = [nbformat.v4.new_markdown_cell(
        "# The ten concepts\n\nEach statement is true or false. For each, write **True** or **False** "
        "and the reason, in a few sentences (2 points each). The course site's Concepts page has the "
        "answers once the assignment is over.")]
    cells[0].id = "concepts-intro"
    for number, title, quote in sections:
        q = nbformat.v4.new_markdown_cell(f"## {number}. {title}\n\n{quote.strip()}")
        q.id = f"concept-{number}"
        a = nbformat.v4.new_markdown_cell("YOUR ANSWER HERE")
        a.id = f"concept-{number}-answer"
        a.metadata["nbgrader"] = {"grade": True, "grade_id": f"concept_{number}", "locked": False, "points": 2,
                                  "schema_version": 3, "solution": True, "task": False}
        cells += [q, a]
    from nbgrader.preprocessors import ComputeChecksums
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3",
                                                                        "language": "python", "name": "python3"}})
    nb, _ = ComputeChecksums().preprocess(nb, {})
    return nb


def graded_notebooks() -> list[Path]:
    return sorted(LABS.glob("lab*.ipynb"))


def write(folder: Path = STUDENT, check: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) every student notebook; returns the stale ones."""
    stale = []
    editions = [(path.name, lambda path=path: student_edition(nbformat.read(path, as_version=4), path.stem))
                for path in graded_notebooks()] + [("concepts.ipynb", concepts_notebook)]
    for name, make in editions:
        text = nbformat.writes(make()) + "\n"
        target = folder / name
        if check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if student/ is not what this writes")
    args = parser.parse_args(argv)
    stale = write(check=args.check)
    if args.check and stale:
        print("stale student notebooks (run `make student`):", ", ".join(p.name for p in stale), file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(graded_notebooks()) + 1} student notebooks (the labs and the concepts) to "
              f"{STUDENT.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
