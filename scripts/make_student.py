"""Write the student edition of the labs, student/<lab>.ipynb, from the solved notebooks in labs/,
and student/concepts.ipynb, the ten concepts of book/concepts.md with an answer cell each.

    python scripts/make_student.py            # (re)write student/*.ipynb and the labkit wheel, to publish
    python scripts/make_student.py --draft    # the same while _config.yml still names the placeholders
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
an instructor with an nbgrader course can take them as they are. One cell is added at the top: it sets
the run's profile, quick (the CI profile) unless the student switches it off, installs labkit when it
is missing (Colab, Binder) from the labkit wheel published with the handouts, pinned by its version and
SHA-256, stops with a clear error when that fails, and prints which labkit it imported.

The wheel, student/labkit-<version>-py3-none-any.whl, is written beside the handouts: labkit's modules
and their metadata, nothing else (no notebook, no test, no script). It is written here with zipfile,
stored entries and fixed timestamps, not by a build backend, so the same source gives the same bytes
on every machine (a backend writes its own version into the metadata, and deflate's output depends on
the zlib build); the handouts carry its SHA-256, so ``--check`` finds them stale whenever labkit
changes. The wheel is not committed: ``make student`` writes it, the handout site serves it
(book/_ext), and the instructor publishes it at ``labkit_handout_url`` (_config.yml, ``sphinx:
config:``). ``make student`` refuses while that address or ``repository: url:`` is still the course's
placeholder; ``--draft`` writes the handouts anyway (the course's own copy, a look before publishing).
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import io
import json
import os
import re
import sys
import zipfile
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
LABS = REPO / "labs"
STUDENT = REPO / "student"
SETUP_ID = "labkit-setup"
STORED = re.compile(r"^The outputs below come from one real (?:reference )?run.*?(?:\n\n|\Z)", re.M | re.S)
SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*(?:\n|\Z)", re.M)
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n.*?^[ \t]*### END HIDDEN TESTS[ \t]*(\n|\Z)", re.M | re.S)


CONFIG = REPO / "_config.yml"
# what the course's own _config.yml holds until an instructor sets them: not an address to publish at
PLACEHOLDERS = {"repository: url:": "https://github.com/efficient-dl-course/labs",
                "sphinx: config: labkit_handout_url:": "https://efficient-dl-course.github.io/handouts"}
WHEEL_TIME = (1980, 1, 1, 0, 0, 0)   # every entry's timestamp: the same bytes from the same source


def _config() -> dict:
    import yaml
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8")) or {}


def repository() -> str:
    """The course's repository, from _config.yml (``repository: url:``)."""
    url = (_config().get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{CONFIG.name} names no repository url (repository: url: ...)")
    return str(url)


def handout_url() -> str:
    """Where the handouts and the labkit wheel are published (``sphinx: config: labkit_handout_url:``)."""
    url = ((_config().get("sphinx") or {}).get("config") or {}).get("labkit_handout_url")
    if not url:
        raise ValueError(f"{CONFIG.name} names no labkit_handout_url (sphinx: config: labkit_handout_url: ...): "
                         "the address where the handout site is published; the handouts install labkit from there")
    return str(url).rstrip("/")


def placeholders() -> list[str]:
    """The settings of _config.yml that still hold the course's placeholder."""
    now = {"repository: url:": repository(), "sphinx: config: labkit_handout_url:": handout_url()}
    return [f"{key} {now[key]}" for key, value in PLACEHOLDERS.items() if now[key].rstrip("/") == value]


def _project() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:                       # Python 3.10
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def wheel_name() -> str:
    project = _project()
    return f"{project['name']}-{project['version']}-py3-none-any.whl"


def wheel_files() -> dict[str, bytes]:
    """What the wheel holds, path: bytes: labkit's modules (line ends as LF) and the dist-info."""
    project = _project()
    files = {f"labkit/{path.name}": path.read_bytes().replace(b"\r\n", b"\n")
             for path in sorted((REPO / "labkit").glob("*.py"))}
    dist = f"{project['name']}-{project['version']}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
            f"Summary: {project['description']}", f"Requires-Python: {project['requires-python']}",
            f"License: {project['license']['text']}"] + [f"Requires-Dist: {d}" for d in project["dependencies"]]
    files[f"{dist}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{dist}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: scripts/make_student.py\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    files[f"{dist}/top_level.txt"] = b"labkit\n"
    digest = lambda data: base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record = [f"{path},sha256={digest(data)},{len(data)}" for path, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    return files


def build_wheel() -> bytes:
    """labkit's wheel, the same bytes from the same source: stored entries, fixed timestamps and modes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for path, data in wheel_files().items():
            info = zipfile.ZipInfo(path, date_time=WHEEL_TIME)
            info.create_system, info.external_attr, info.compress_type = 3, 0o644 << 16, zipfile.ZIP_STORED
            z.writestr(info, data)
    return out.getvalue()


def wheel_url(base: str | None = None, wheel: bytes | None = None) -> str:
    """The wheel's address with its SHA-256 (pip checks it): ``<base>/<name>#sha256=<hex>``."""
    wheel = build_wheel() if wheel is None else wheel
    return f"{(base or handout_url()).rstrip('/')}/{wheel_name()}#sha256={hashlib.sha256(wheel).hexdigest()}"


def reference_run(name: str) -> dict:
    """The ``run`` record of a lab's reference run, from labs/results/<lab>.json ({} if none)."""
    path = LABS / "results" / f"{name.split('_')[0]}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("run", {})


def reference_time(name: str) -> str:
    """How long the reference run of a lab took, and where, from labs/results/<lab>.json ('' if none)."""
    run = reference_run(name)
    if "minutes" not in run or "device" not in run:
        return ""
    images = f", {run['train_images']} training images" if "train_images" in run else ""
    return f"\n# (the course's reference run of this lab: {run['minutes']:g} minutes on {run['device']}{images})"


def written_answers(name: str) -> str:
    """The handout's opening line on what written answers rest on: the full reference run, with its time
    and device read from labs/results/<lab>.json (no time where the lab has no reference run yet)."""
    run = reference_run(name)
    fmt = f", {run['precision'].split(',')[0]}" if run.get("precision") else ""
    took = (f" (it took {run['minutes']:g} minutes on {run['device']}{fmt})"
            if "minutes" in run and "device" in run else "")
    return ("# Written answers: base them on the full reference run of this lab, the stored outputs of the solved "
            f"lab and the course's results page{took},\n# not on a quick run: its models train far less than the lab states.")


def setup_cell(url: str | None = None, name: str = "") -> nbformat.NotebookNode:
    url = url or wheel_url()
    version = _project()["version"]
    source = f'''{written_answers(name)}
# Setup. QUICK = True: the quick run (minutes: fewer epochs and images, iterative pruning in one step); it
# runs every cell and checks your code, but its numbers cannot answer the written questions.
# QUICK = False: the full run of the course, as its reference run ran it{reference_time(name)}
QUICK = True
import importlib, importlib.util, os, subprocess, sys
os.environ["LABKIT_PROFILE"] = "ci" if QUICK else "full"
LABKIT = "{version}"   # the labkit this handout was made with, pinned by version and SHA-256:
WHEEL = "{url}"
if importlib.util.find_spec("labkit") is None:     # Colab, Binder: install it
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"labkit @ {{WHEEL}}"])
    importlib.invalidate_caches()
    if pip.returncode != 0 or importlib.util.find_spec("labkit") is None:
        raise RuntimeError(f"labkit {{LABKIT}} could not be installed from {{WHEEL}} (pip's message is above). Check "
                           "the network, or ask your instructor for this handout's labkit wheel and install it: "
                           "pip install <the .whl file>")
import labkit
print(f"labkit {{labkit.__version__}} from {{os.path.dirname(labkit.__file__)}}")
if labkit.__version__ != LABKIT:
    raise RuntimeError(f"this handout was made for labkit {{LABKIT}}, but labkit {{labkit.__version__}} is installed "
                       f"({{os.path.dirname(labkit.__file__)}}): install this handout's: pip install 'labkit @ {{WHEEL}}'")'''
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


def student_edition(nb: nbformat.NotebookNode, name: str, url: str | None = None) -> nbformat.NotebookNode:
    """The student notebook of a solved one (which is not changed); ``url``: the wheel's, as ``wheel_url``."""
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
    out.cells.insert(0, setup_cell(url, name))
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


class Placeholder(SystemExit):
    """_config.yml still names the course's placeholder addresses: nothing to publish yet."""


def write(folder: Path | None = None, check: bool = False, draft: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) every student notebook and the labkit wheel they install; returns
    the stale ones. Writing refuses, raising ``Placeholder``, while _config.yml names a placeholder address,
    unless ``draft``."""
    folder = STUDENT if folder is None else folder
    if not check and not draft and placeholders():
        raise Placeholder(
            "make student: _config.yml still holds the course's placeholder for " + " and ".join(placeholders()) +
            ". Set `repository: url:` to your repository and `sphinx: config: labkit_handout_url:` to the address "
            f"where you publish the handout site (the handouts install labkit from <that address>/{wheel_name()}), "
            "then run `make student` again. (`scripts/make_student.py --draft` writes them anyway, not to publish.)")
    wheel = build_wheel()
    url = wheel_url(wheel=wheel)
    stale = []
    editions = [(path.name, lambda path=path: student_edition(nbformat.read(path, as_version=4), path.stem, url))
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
    target = folder / wheel_name()
    if check:
        if target.exists() and target.read_bytes() != wheel:      # not committed: checked when it is there
            stale.append(target)
    else:
        for old in folder.glob("labkit-*.whl"):                  # another version's: never published with these
            if old != target:
                old.unlink()
        target.write_bytes(wheel)
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if student/ is not what this writes")
    parser.add_argument("--draft", action="store_true",
                        help="write even while _config.yml names the placeholder addresses (not to publish)")
    args = parser.parse_args(argv)
    try:
        stale = write(check=args.check, draft=args.draft)
    except Placeholder as refused:
        print(refused, file=sys.stderr)
        return 2
    if args.check and stale:
        print("stale student notebooks (run `make student`, or `scripts/make_student.py --draft` while _config.yml "
              "names the placeholders; the handouts pin labkit's wheel by its SHA-256, so every change to labkit/ "
              "makes them stale):", ", ".join(p.name for p in stale), file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(graded_notebooks()) + 1} student notebooks (the labs and the concepts) and "
              f"{wheel_name()}, the labkit they install, to {os.path.relpath(STUDENT)}/: publish them at "
              f"{handout_url()}/" + (" (a draft: _config.yml names placeholders)" if placeholders() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
