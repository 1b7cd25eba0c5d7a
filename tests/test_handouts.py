"""Handouts a student can work alone, and publishing that works: every written question stands right
above its answer cell and every exercise has its instruction above it, in the solved notebooks and in
the handouts; the handout's setup cell installs the labkit wheel it pins (version and SHA-256), says
which labkit it imported and stops with a clear error when it cannot; the wheel holds labkit and
nothing else and is the same bytes from the same source; `make student` refuses the placeholder
addresses; the solutions site's notebook downloads carry no nbgrader marker and no hidden test."""
import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

import labkit

REPO = Path(__file__).resolve().parents[1]
LABS = sorted((REPO / "labs").glob("lab*.ipynb"))


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ms():
    return _module("make_student_for_handouts", REPO / "scripts" / "make_student.py")


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_check(cell):
    return cell.cell_type == "code" and _meta(cell).get("grade") and not _meta(cell).get("solution")


def unanswerable(nb) -> list[str]:
    """What a student working from the notebook alone could not do: an answer cell (a markdown solution,
    or a code solution with no check after it) without a question right above it (a markdown cell that
    is no solution, with '**Question'), an exercise (a code solution followed by its check) without an
    instruction right above it ('**Exercise')."""
    problems = []
    for i, cell in enumerate(nb.cells):
        m = _meta(cell)
        if not m.get("solution"):
            continue
        exercise = cell.cell_type == "code" and i + 1 < len(nb.cells) and _is_check(nb.cells[i + 1])
        label = "**Exercise" if exercise else "**Question"
        above = nb.cells[i - 1] if i else None
        if (above is None or above.cell_type != "markdown" or _meta(above).get("solution")
                or label not in above.source):
            kind = "exercise" if exercise else "answer cell"
            problems.append(f"{kind} {m.get('grade_id')}: no {'instruction' if exercise else 'question'} right above it")
    return problems


def _notebooks():
    for path in LABS:
        yield pytest.param(path, id=f"solved-{path.stem}")
        yield pytest.param(REPO / "student" / path.name, id=f"handout-{path.stem}")


@pytest.mark.parametrize("path", _notebooks())
def test_every_answer_cell_has_its_question_and_every_exercise_its_instruction_above_it(path):
    assert unanswerable(nbformat.read(path, as_version=4)) == []


# the written questions of the assignment (the course's parts), by the answer cell under each
QUESTIONS = {
    "lab1_sparse_optimization": {"lab1_a_answer": "(a)", "lab1_a_formula": "(a), in code", "lab1_b_answer": "(b)",
                                 "lab1_c_answer": "(c)", "lab1_d_answer": "(d)", "lab1_e_answer": "(e)",
                                 "lab1_f_answer": "(f)", "lab1_summary": "(summary)"},
    "lab2_pruning": {"lab2_a_answer": "(a)", "lab2_b_answer": "(b)", "lab2_c_answer": "(c)", "lab2_d_zeros": "(d), the zeros",
                     "lab2_d_answer": "(d)", "lab2_e_answer": "(e)", "lab2_f_answer": "(f)"},
    "lab3_quantization": {f"lab3_{p}_answer": f"({p})" for p in "abcdefg"},
    "lab4_compression": {"lab4_concept3": "(a), concept 3", "lab4_concept2": "(b), concept 2",
                         "lab4_concept6": "(c), concept 6", "lab4_d_answer": "(d)"},
    "lab5_structure": {"lab5_a_answer": "(a), concept 4", "lab5_b_answer": "(b), concept 6", "lab5_c_answer": "(c), concept 8"},
}


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_every_written_question_of_the_assignment_stands_in_the_handout(path):
    """Each part's question, labelled with its part, right above its answer cell in the handout; the
    answer cell is empty there (the question is not inside the answer)."""
    nb = nbformat.read(REPO / "student" / path.name, as_version=4)
    found = {}
    for above, cell in zip(nb.cells, nb.cells[1:]):
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and gid in QUESTIONS[path.stem]:
            label = re.match(r"(?:## .*\n\n)?\*\*Question ([^*]+)\.\*\* (\S.{40,})", above.source, flags=re.S)
            found[gid] = label.group(1) if label else above.source[:60]
            assert cell.source in ("YOUR ANSWER HERE", "# YOUR CODE HERE\nraise NotImplementedError()"), gid
    assert found == QUESTIONS[path.stem]


def test_lab1_a_formula_cell_gets_its_instruction_above_it_not_inside_the_solution():
    nb = nbformat.read(REPO / "student" / LABS[0].name, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if _meta(c).get("grade_id") == "lab1_a_formula")
    assert "raise NotImplementedError()" in nb.cells[i].source
    assert all(word in nb.cells[i - 1].source for word in ("W^0 = 0", "sl.optimize", "lr"))


@pytest.mark.parametrize("mutate, named", [
    ("question", "answer cell lab1_b_answer: no question right above it"),
    ("instruction", "exercise lab1_c_solution: no instruction right above it"),
    ("formula", "answer cell lab1_a_formula: no question right above it"),
    ("inside", "answer cell lab4_concept2: no question right above it"),
])
def test_the_check_names_a_missing_question_or_instruction(mutate, named):
    """The check above can fail: a question or an instruction removed from a copy, or a question that
    stands only inside its answer (as Lab 4's did), is named."""
    stem = "lab4_compression" if mutate == "inside" else LABS[0].stem
    nb = copy.deepcopy(nbformat.read(REPO / "labs" / f"{stem}.ipynb", as_version=4))
    gid = {"question": "lab1_b_answer", "instruction": "lab1_c_solution", "formula": "lab1_a_formula",
           "inside": "lab4_concept2"}[mutate]
    i = next(i for i, c in enumerate(nb.cells) if _meta(c).get("grade_id") == gid)
    if mutate == "inside":
        nb.cells[i].source = nb.cells[i - 1].source + "\n\n" + nb.cells[i].source
    del nb.cells[i - 1]
    assert unanswerable(nb) == [named]


# ---- labkit's version, the wheel and the setup cell

def test_labkit_version_is_pyprojects():
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert labkit.__version__ == project["version"]


def test_the_wheel_is_the_same_bytes_from_the_same_source(ms, tmp_path, monkeypatch):
    """Built twice, and from a copy of the source with other timestamps and modes: the same bytes, so the
    SHA-256 in the handouts is the wheel's wherever `make student` runs."""
    first = ms.build_wheel()
    assert ms.build_wheel() == first
    shutil.copytree(REPO / "labkit", tmp_path / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for path in (tmp_path / "labkit").iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
        path.chmod(0o600)
    monkeypatch.setattr(ms, "REPO", tmp_path)
    assert ms.build_wheel() == first


def test_the_wheel_holds_labkit_and_nothing_else(ms):
    """labkit's modules and a valid dist-info (RECORD's hashes right), no notebook, no solution block and
    no hidden test of the solved notebooks (labkit is public, its references included)."""
    with zipfile.ZipFile(__import__("io").BytesIO(ms.build_wheel())) as z:
        assert z.testzip() is None
        names = z.namelist()
        files = {name: z.read(name) for name in names}
    modules = sorted(f"labkit/{p.name}" for p in (REPO / "labkit").glob("*.py"))
    dist = f"labkit-{labkit.__version__}.dist-info"
    assert sorted(names) == sorted(modules + [f"{dist}/{n}" for n in ("METADATA", "WHEEL", "RECORD", "top_level.txt")])
    for name, data in files.items():
        assert b"### BEGIN SOLUTION" not in data and b"### BEGIN HIDDEN TESTS" not in data, name
    assert f"Version: {labkit.__version__}" in files[f"{dist}/METADATA"].decode()
    for line in files[f"{dist}/RECORD"].decode().splitlines():
        name, digest, size = line.split(",")
        if name != f"{dist}/RECORD":
            import base64
            want = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={want}" and int(size) == len(files[name]), name
    assert ms.wheel_name() == f"labkit-{labkit.__version__}-py3-none-any.whl"


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_each_handout_pins_the_wheel_make_student_writes(ms, path):
    first = nbformat.read(REPO / "student" / path.name, as_version=4).cells[0]
    sha = hashlib.sha256(ms.build_wheel()).hexdigest()
    assert f'WHEEL = "{ms.handout_url()}/{ms.wheel_name()}#sha256={sha}"' in first.source
    assert f'LABKIT = "{labkit.__version__}"' in first.source and "QUICK = True" in first.source


def _run_setup(ms, tmp_path, url, extra_path=None):
    """The handout's setup cell, run by a Python that has no labkit (``-S``: no site-packages), pip
    installing into a folder of its own (PIP_TARGET, offline, no dependencies): nothing of the
    project's environment is touched."""
    target = tmp_path / "target"
    target.mkdir(exist_ok=True)
    env = dict(os.environ, PIP_TARGET=str(target), PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONPATH=os.pathsep.join(str(p) for p in [extra_path, target] if p))
    source = ms.setup_cell(url, LABS[1].stem).source
    run = subprocess.run([sys.executable, "-S", "-c", source], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    return run, target


def test_the_setup_cell_installs_the_pinned_wheel_and_says_which_labkit(ms, tmp_path):
    wheel = ms.build_wheel()
    (tmp_path / ms.wheel_name()).write_bytes(wheel)
    run, target = _run_setup(ms, tmp_path, ms.wheel_url(tmp_path.as_uri(), wheel))
    assert run.returncode == 0, run.stderr
    assert f"labkit {labkit.__version__} from {target / 'labkit'}" in run.stdout


@pytest.mark.parametrize("fault", ["missing", "tampered"])
def test_the_setup_cell_stops_with_a_clear_error_when_labkit_cannot_be_installed(ms, tmp_path, fault):
    """No wheel at the address, or one whose SHA-256 is not the pinned one: the cell stops, saying what it
    could not install and what to do, and nothing is installed (no bare ModuleNotFoundError later)."""
    wheel = ms.build_wheel()
    if fault == "tampered":
        tampered = bytearray(wheel)
        tampered[len(wheel) // 2] ^= 1                        # one bit of one module
        (tmp_path / ms.wheel_name()).write_bytes(bytes(tampered))
    run, target = _run_setup(ms, tmp_path, ms.wheel_url(tmp_path.as_uri(), wheel))
    assert run.returncode != 0
    assert f"RuntimeError: labkit {labkit.__version__} could not be installed from {tmp_path.as_uri()}" in run.stderr
    assert "ModuleNotFoundError" not in run.stderr and "labkit" not in {p.name for p in target.iterdir()}


def test_the_setup_cell_refuses_another_labkit_than_its_own(ms, tmp_path):
    (tmp_path / "other" / "labkit").mkdir(parents=True)
    (tmp_path / "other" / "labkit" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    run, _ = _run_setup(ms, tmp_path, ms.wheel_url(tmp_path.as_uri()), extra_path=tmp_path / "other")
    assert run.returncode != 0
    assert f"labkit 0.0.1 from {tmp_path / 'other' / 'labkit'}" in run.stdout
    assert f"this handout was made for labkit {labkit.__version__}, but labkit 0.0.1 is installed" in run.stderr


# ---- make student: placeholders refused, the wheel written beside the handouts

def _config(tmp_path, repository, handouts):
    text = (REPO / "_config.yml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(\s+url: ).*$", rf"\g<1>{repository}", text, count=1)
    text = re.sub(r"(?m)^(\s+labkit_handout_url: ).*$", rf"\g<1>{handouts}", text, count=1)
    path = tmp_path / "_config.yml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("which", ["both", "repository", "handouts"])
def test_make_student_refuses_while_an_address_is_the_placeholder(ms, tmp_path, monkeypatch, capsys, which):
    repository = ms.PLACEHOLDERS["repository: url:"] if which in ("both", "repository") else "https://github.com/me/course"
    handouts = ms.PLACEHOLDERS["sphinx: config: labkit_handout_url:"] if which in ("both", "handouts") else "https://me.github.io/h"
    monkeypatch.setattr(ms, "CONFIG", _config(tmp_path, repository, handouts))
    monkeypatch.setattr(ms, "STUDENT", tmp_path / "student")
    assert ms.main([]) == 2
    err = capsys.readouterr().err
    assert "still holds the course's placeholder" in err and "make student" in err
    assert (f"repository: url: {repository}" in err) == (which != "handouts")
    assert (f"labkit_handout_url: {handouts}" in err) == (which != "repository")
    assert not (tmp_path / "student").exists()
    assert ms.main(["--draft"]) == 0 and (tmp_path / "student" / ms.wheel_name()).exists()


def test_make_student_writes_the_handouts_and_the_wheel_they_pin(ms, tmp_path, monkeypatch):
    monkeypatch.setattr(ms, "CONFIG", _config(tmp_path, "https://github.com/me/course", "https://me.github.io/h/"))
    monkeypatch.setattr(ms, "STUDENT", tmp_path / "student")
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "labkit-0.0.1-py3-none-any.whl").write_bytes(b"old")     # another version's
    assert ms.main([]) == 0
    wheel = (tmp_path / "student" / ms.wheel_name()).read_bytes()
    assert wheel == ms.build_wheel() and sorted(p.name for p in (tmp_path / "student").glob("*.whl")) == [ms.wheel_name()]
    first = nbformat.read(tmp_path / "student" / LABS[0].name, as_version=4).cells[0]
    assert f"https://me.github.io/h/{ms.wheel_name()}#sha256={hashlib.sha256(wheel).hexdigest()}" in first.source
    assert ms.write(folder=tmp_path / "student", check=True) == []
    (tmp_path / "student" / ms.wheel_name()).write_bytes(wheel + b"x")
    assert ms.write(folder=tmp_path / "student", check=True) == [tmp_path / "student" / ms.wheel_name()]


def test_makes_student_target_is_the_one_that_refuses():
    """`make student` publishes (no --draft); the book and the reference run write the course's draft."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    student = re.search(r"(?m)^student:.*\n((?:\t.*\n)+)", makefile).group(1)
    assert "scripts/make_student.py" in student and "--draft" not in student


# ---- the solutions site's downloads

def test_the_solutions_sites_notebook_downloads_carry_no_marker_and_no_hidden_test(tmp_path):
    """Sphinx copies each page's original source into _sources/ (the download button's .ipynb); the
    extension rewrites those of the labs at the end of the build. Outputs and metadata stay; the wheel
    the handouts install is written at the site's root."""
    site = _module("course_site_for_handouts", REPO / "book" / "_ext" / "course_site.py")
    (tmp_path / "_sources" / "labs").mkdir(parents=True)
    for path in LABS:
        shutil.copy(path, tmp_path / "_sources" / "labs" / path.name)
    app = types.SimpleNamespace(outdir=str(tmp_path), builder=types.SimpleNamespace(format="html"))
    site._finish(app, None)
    for path in LABS:
        text = (tmp_path / "_sources" / "labs" / path.name).read_text(encoding="utf-8")
        for marker in ("### BEGIN SOLUTION", "### END SOLUTION", "BEGIN HIDDEN TESTS", "hidden=True"):
            assert marker not in text, (path.name, marker)
        got, solved = nbformat.reads(text, as_version=4), nbformat.read(path, as_version=4)
        assert [c.get("outputs") for c in got.cells] == [c.get("outputs") for c in solved.cells]
        assert any("def gradient" in c.source or "def keep_mask" in c.source or "def ste_quantize" in c.source
                   or "def block_soft_threshold" in c.source for c in got.cells) == (path.stem != "lab4_compression")      # the solutions stay
    ms = site._make_student()
    assert (tmp_path / ms.wheel_name()).read_bytes() == ms.build_wheel()


# ---- the README's students' section

def test_the_readmes_students_section_opens_the_handouts_and_says_what_the_quick_run_can_answer():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Students"):]
    section = section[:section.index("\n## ", 1)]
    assert "jupyter lab student/" in section and "jupyter lab labs/" not in section
    assert "cannot answer the written questions" in section and "QUICK = False" in section
    for lab in (REPO / "labs" / "results").glob("lab*.json"):
        run = json.loads(lab.read_text(encoding="utf-8"))["run"]
        assert f"{run['minutes']:g}" in section, lab.name               # the reference run's own times
        assert run["device"].startswith("cpu") or run["device"].startswith("numpy")
    assert "2-thread x86_64 CPU" in section


@pytest.mark.parametrize("lab", ["lab1_sparse_optimization", "lab2_pruning", "lab3_quantization", "lab4_compression",
                                 "lab5_structure"])
def test_every_handout_says_written_answers_rest_on_the_full_run_with_its_stored_time(ms, lab):
    line = ms.written_answers(lab)
    assert line.startswith("# Written answers: base them on the full reference run") and "not on a quick run" in line
    path = REPO / "labs" / "results" / f"{lab.split('_')[0]}.json"
    if path.exists():
        run = json.loads(path.read_text())["run"]
        assert f"it took {run['minutes']:g} minutes on {run['device']}" in line
        if run.get("precision"):
            assert run["precision"].split(",")[0] in line
    else:
        assert "it took" not in line
