"""The grader's trusted side, piece by piece (scripts/grade.py, scripts/sandbox.py), without running a
sandbox: which cells a part runs, the copy of labkit without its references, reading the runner's
answers, refusing to grade without a sandbox, and the grades files' escaping."""
import ast
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import course_scripts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grade():
    return course_scripts.load("grade")


def test_a_part_runs_its_cell_and_the_cells_that_define_what_it_uses(grade):
    cells = [("b", "import os\nos._exit(0)\ndef helper(x):\n    return x\n"),
             ("c", "def project(v):\n    return helper(v) + unused\n"),
             ("d", "def sub(W):\n    return W\n"),
             ("e", "unused = 1\nwhile True:\n    pass\n"),
             ("f", "%time x = 1\ndef step(W):\n    return sub(W)\n")]
    assert grade.needed(cells, 1) == [0, 1, 3]          # helper from (b), unused from (e)
    assert grade.needed(cells, 2) == [2]                 # (b)'s exit and (e)'s hang cost (d) nothing
    assert grade.needed(cells, 4) == [2, 4]              # magics parse; sub from (d)
    assert grade.needed([("x", "def f(:\n")], 0) == [0]  # a syntax error: the cell alone
    chain = [("g", "def top(v):\n    return outer(v)\n"), ("h", "def outer(v):\n    return inner(v)\n"),
             ("i", "def inner(v):\n    return v\n"), ("j", "def other(v):\n    return v\n")]
    assert grade.needed(chain, 0) == [0, 1, 2]           # what it uses, and what that uses in turn


def test_the_labkit_copy_has_no_reference_left_and_every_stub_names_its_part(grade, tmp_path):
    from labkit import exercises
    keys = exercises.keys()
    lib = grade.labkit_without(keys, tmp_path)
    for key in keys:
        for module, names in exercises.forbidden(key).items():
            source = (lib / "labkit" / (module.split(".")[1] + ".py")).read_text()
            tree = ast.parse(source)
            defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            for name in names:
                node = defs[name]
                bodies = [node] if isinstance(node, ast.FunctionDef) else \
                    [m for m in node.body if isinstance(m, ast.FunctionDef)]
                for fn in bodies:
                    assert len(fn.body) == 1 and isinstance(fn.body[0], ast.Raise), (module, name)
    # the stubbed copy imports, and a stub says which reference and which part
    code = ("import labkit.sparse_linear as s\ntry:\n    s.gradient(1, 2, 3)\nexcept RuntimeError as e:\n    print(e)\n"
            "import labkit.exercises")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "labkit's gradient is not available while grading lab1 (b)"


def test_a_name_the_judge_forbids_but_labkit_lacks_is_an_error(grade):
    with pytest.raises(ValueError, match="does not define"):
        grade._stubbed("def f():\n    pass\n", {"g": "lab1 (b)"}, "{name} {key}")


def test_the_runners_answers_are_read_strictly(grade):
    good = json.dumps({"id": "a", "status": "ok", "message": "", "sizes": [2, 1]}).encode() + b"\nxyz"
    err = json.dumps({"id": "b", "status": "error", "message": "boom", "sizes": []}).encode() + b"\n"
    frames = grade._frames(good + err)
    assert frames == {"a": ("ok", "", [b"xy", b"z"]), "b": ("error", "boom", [])}
    assert grade._frames(good[:-1]) == {}                                # cut short
    lying = json.dumps({"id": "a", "status": "ok", "message": "", "sizes": [-1, 99]}).encode() + b"\nxy"
    assert grade._frames(lying) == {}
    assert grade._frames(b"\x00" * 10000) == {} and grade._frames(b"{not json}\n") == {}
    twice = err + json.dumps({"id": "b", "status": "ok", "message": "", "sizes": []}).encode() + b"\n"
    assert grade._frames(twice)["b"][0] == "error"                      # the first answer counts


def test_a_missing_or_malformed_answer_scores_nothing(grade):
    assert grade._verdict("lab1 (b)", None, "not answered") == "not answered"
    assert grade._verdict("lab1 (b)", ("error", "timeout", []), "x") == "timeout"
    assert "could not" in grade._verdict("lab1 (b)", ("ok", "", [b"junk", b"junk"]), "x")
    assert "could not" in grade._verdict("lab1 (b)", ("ok", "", [b"junk"]), "x")


def test_an_honest_observation_passes_and_a_wrong_one_is_named(grade):
    import numpy as np
    from labkit import exercises
    right = lambda W, X, y: 2.0 * X.T @ (X @ W - y)
    blobs = [exercises.encode(exercises.observe("lab1 (b)", right)),
             exercises.encode(exercises.observe("lab1 (b)", right, hidden=True))]
    assert grade._verdict("lab1 (b)", ("ok", "", blobs), "x") is None
    wrong = lambda W, X, y: np.asarray(X.T @ (X @ W - y))
    blobs = [exercises.encode(exercises.observe("lab1 (b)", wrong)),
             exercises.encode(exercises.observe("lab1 (b)", wrong, hidden=True))]
    assert "factor 2" in grade._verdict("lab1 (b)", ("ok", "", blobs), "x")


def test_without_a_sandbox_the_grader_refuses_unless_trusted(grade, tmp_path, monkeypatch):
    import sandbox
    monkeypatch.setattr(sandbox, "why_unavailable", lambda: "bubblewrap is not installed (test)")
    (tmp_path / "subs").mkdir()
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert grade.main([str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv")]) == 2
    assert "bubblewrap is not installed (test)" in err.getvalue() and "--trust-submissions" in err.getvalue()
    assert not (tmp_path / "g.csv").exists()
    with pytest.raises(RuntimeError, match="only inside a sandbox"):
        grade.Grader(grade.course_labs(), sandboxed=True)
    assert grade.main([str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv"), "--trust-submissions"]) == 0
    assert (tmp_path / "g.csv").exists()


@pytest.mark.parametrize("text", ["=1+1", "+4 by hand", "-2", "@SUM(A1)", "\tx", "\rx"])
def test_a_csv_cell_a_spreadsheet_would_run_is_quoted_as_text(grade, text):
    out = grade.csv_text(["h"], [[text]])
    cell = list(csv.reader(io.StringIO(out)))[1][0]
    assert cell == "'" + text
    assert out.splitlines()[1].startswith('"\'')                       # every cell quoted


def test_plain_csv_cells_are_unchanged(grade):
    assert list(csv.reader(io.StringIO(grade.csv_text(["a", "b"], [["3/4 +2 by hand", "x,y"]]))))[1] == \
        ["3/4 +2 by hand", "x,y"]


def test_console_text_from_a_submission_is_escaped(grade):
    shown = grade.printable("alice\x1b[2J\r\nbob: 30/30\u202e\x07 ok é")
    assert all(ord(c) >= 32 and c not in "\u202e\x7f" for c in shown)
    assert "\\x1b[2J" in shown and "\\r\\n" in shown and "é" in shown and " ok " in shown


def test_an_answer_cannot_open_a_section_or_inject_html(grade):
    g = grade.Graded("x_y.ipynb", lab="lab1_sparse_optimization",
                     answers={"lab1_a_answer": "ok\n```\n## forged\n<b>x</b>\n````"})
    lab = grade.Lab("lab1_sparse_optimization", "", {}, {}, {"lab1_a_answer": 4.0})
    text = grade.answers_text([g], {lab.name: lab})
    assert "`````text\nok\n```\n## forged\n<b>x</b>\n````\n`````" in text
    assert "## x\\_y.ipynb" in text


def test_the_grades_are_written_atomically(grade, tmp_path, monkeypatch):
    target = tmp_path / "grades.csv"
    target.write_text("previous")
    monkeypatch.setattr(grade.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        grade._atomic(target, "new")
    assert target.read_text() == "previous"


def test_links_in_the_submissions_folder_are_not_followed(grade, tmp_path):
    """A linked notebook gets a line, not a grade: inside the folder it could make one student's
    notebook another's, outside it could reach the instructor's files; linked folders are not entered."""
    subs = tmp_path / "subs"
    (subs / "bob").mkdir(parents=True)
    (subs / "bob" / "lab1.ipynb").write_text("{}")
    (subs / "in.ipynb").symlink_to(subs / "bob" / "lab1.ipynb")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.ipynb").write_text("{}")
    (subs / "out.ipynb").symlink_to(tmp_path / "secret" / "x.ipynb")
    (subs / "dir").symlink_to(tmp_path / "secret")
    got = [p.relative_to(subs).as_posix() for p in grade.submissions(subs)]
    assert got == ["bob/lab1.ipynb", "in.ipynb", "out.ipynb"]
    labs = grade.course_labs()
    for name in ("in.ipynb", "out.ipynb"):
        g, lab, cells = grade._read(subs / name, labs, subs)
        assert lab is None and "symbolic link" in g.status


def test_malformed_metadata_costs_only_the_cells_it_breaks(grade, tmp_path):
    import nbformat
    nb = nbformat.read(REPO / "labs" / "lab1_sparse_optimization.ipynb", as_version=4)
    raw = json.loads(nbformat.writes(nb))
    raw["cells"][0]["metadata"]["nbgrader"] = "a string"
    cells = [c for c in raw["cells"] if isinstance(c["metadata"].get("nbgrader"), dict)
             and c["metadata"]["nbgrader"].get("grade_id") == "lab1_c_solution"]
    cells[0]["metadata"]["nbgrader"]["grade_id"] = ["a", "list"]
    raw["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "lab1_b_solution", "solution": True}},
                         "source": 42})
    path = tmp_path / "m.ipynb"
    path.write_text(json.dumps(raw))
    g, lab, code = grade._read(path, grade.course_labs(), None)
    assert lab.name == "lab1_sparse_optimization" and g.status == "graded"
    assert [grade_id for grade_id, _ in code] == ["lab1_b_solution", "lab1_d_solution", "lab1_e_solution",
                                                  "lab1_f_solution"]


def test_trusted_grading_without_a_sandbox_grades_as_the_sandbox_does(grade, tmp_path):
    """--trust-submissions: the same runner and judge as plain child processes (no isolation)."""
    import shutil
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(REPO / "labs" / "lab1_sparse_optimization.ipynb", subs / "solved.ipynb")
    shutil.copy(REPO / "student" / "lab1_sparse_optimization.ipynb", subs / "blank.ipynb")
    labs = grade.course_labs()
    got = {g.submission: g for g in grade.grade_all(grade.submissions(subs), labs, timeout=30, root=subs,
                                                    sandboxed=False)}
    lab = labs["lab1_sparse_optimization"]
    assert got["solved.ipynb"].checks == {c: p for c, (_, _, p) in lab.checks.items()}
    assert got["blank.ipynb"].checks == {c: 0.0 for c in lab.checks}
    assert all("not written yet" in e for e in got["blank.ipynb"].errors.values())


def test_the_grader_does_not_load_the_courses_editions():
    """Grading needs no edition of the course's values (labkit.course): a broken edition cannot stop it."""
    code = ("import sys; sys.path.insert(0, 'scripts'); import grade\n"
            "from labkit import exercises\n"
            "labs = grade.course_labs()\n"
            "right = lambda W, X, y: 2.0 * X.T @ (X @ W - y)\n"
            "exercises.judge('lab1 (b)', exercises.decode(exercises.encode(exercises.observe('lab1 (b)', right))))\n"
            "print('labkit.course' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


_PROBE = r"""
import base64, inspect, json, sys, warnings
warnings.simplefilter("ignore")
import labkit
from labkit import exercises
import importlib
out = []
for module in ("sparse_linear", "prune", "quant", "exercises", "judge", "sensitivity", "structured", "layers", "costs"):
    mod = importlib.import_module(f"labkit.{module}")
    for name, f in list(vars(mod).items()):
        if not (inspect.isfunction(f) and f.__module__ == mod.__name__) or name in ("observe", "check", "judge"):
            continue
        for key in exercises.keys():
            obs = exercises.observe(key, f)
            if not any(k.endswith("/raised") or k.endswith("/returned") for k in obs):
                out.append([key, f"{module}.{name}", base64.b64encode(exercises.encode(obs)).decode()])
print(json.dumps(out))
"""


def test_no_function_left_in_the_sandboxs_labkit_passes_a_check(grade, tmp_path):
    """Every function of the labkit copy the sandbox holds, called on every check's inputs: none gives
    the reference's result (the references, what they are built from and the wrong versions raise)."""
    import base64
    from labkit import exercises
    lib = grade.labkit_without(exercises.keys(), tmp_path)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin", "LABKIT_PROGRESS": "off"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    passing = []
    for key, name, data in json.loads(out.stdout.splitlines()[-1]):
        try:
            exercises.judge(key, exercises.decode(base64.b64decode(data)))
            passing.append((key, name))
        except exercises.Mistake:
            pass
    assert passing == []


def test_the_answers_file_holds_code_answers_and_why_checks_lost_points(grade, tmp_path):
    labs = grade.course_labs()
    lab = labs["lab1_sparse_optimization"]
    assert "lab1_a_formula" in lab.code_answers and "lab1_a_formula" not in lab.solutions
    g, _, _ = grade._read(REPO / "labs" / "lab1_sparse_optimization.ipynb", labs, None)
    assert "W1 = W0 - 2 * lr" in g.answers["lab1_a_formula"]
    g.errors = {"lab1_b_check": "lab1 (b) gradient misses the factor 2\x1b[2J"}
    text = grade.answers_text([g], labs)
    assert "### lab1_a_formula (code) (not graded)" in text and "W1 = W0 - 2 * lr" in text
    assert "### Checks that lost points" in text and "(b) lab1 (b) gradient misses the factor 2\\x1b[2J" in text
