"""The student edition (scripts/make_student.py) and the grader (scripts/grade.py): the handouts hold no
line of any solution and are what the generator writes; the solved notebooks score full marks, the
blank handouts zero on every exercise, and a planted mistake costs its part's points and only those;
a student's code is what the self-checks call."""
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

import course_scripts

REPO = Path(__file__).resolve().parents[1]
LABS = sorted((REPO / "labs").glob("lab*.ipynb"))


@pytest.fixture(scope="module")
def ms():
    return course_scripts.load("make_student")


@pytest.fixture(scope="module")
def grade():
    return course_scripts.load("grade")


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _solution_lines(nb) -> set[str]:
    """The lines between the solution markers of every cell (stripped, non-empty), less those that
    also appear outside every solution block of the notebook (those are not secret)."""
    inside, outside = set(), set()
    for cell in nb.cells:
        block = False
        for line in cell.source.splitlines():
            text = line.strip()
            if text.startswith("### BEGIN SOLUTION") or text.startswith("### BEGIN HIDDEN TESTS"):
                block = True
            elif text.startswith("### END SOLUTION") or text.startswith("### END HIDDEN TESTS"):
                block = False
            elif text:
                (inside if block else outside).add(text)
    return inside - outside


def test_the_committed_handouts_are_what_the_generator_writes(ms):
    assert ms.write(check=True) == [], "run `make student`"


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_a_handout_holds_no_line_of_any_solution_and_no_output(ms, path):
    solved = nbformat.read(path, as_version=4)
    secret = _solution_lines(solved)
    student = nbformat.read(REPO / "student" / path.name, as_version=4)
    for cell in student.cells:
        leaked = [line for line in cell.source.splitlines() if line.strip() in secret]
        assert not leaked, f"{path.name}: solution lines in the handout: {leaked}"
        assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source
        assert not cell.get("outputs")
    assert "widgets" not in student.metadata           # a widget's rendered state is an output too
    graded = [c for c in student.cells if _meta(c).get("grade")]
    assert all("checksum" in _meta(c) and "points" in _meta(c) for c in graded)
    if any(_meta(c).get("solution") for c in solved.cells if c.cell_type == "code"):
        assert any("raise NotImplementedError()" in c.source for c in student.cells)


def test_the_handouts_first_cell_installs_labkit_and_picks_the_quick_run(ms):
    first = nbformat.read(REPO / "student" / LABS[0].name, as_version=4).cells[0]
    assert first.cell_type == "code" and 'find_spec("labkit") is None' in first.source
    assert ms.wheel_url() in first.source and 'QUICK = True' in first.source


def test_the_solutions_view_drops_markers_and_hidden_tests(ms):
    src = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\ncheck(f)\n### BEGIN HIDDEN TESTS\ncheck(f, hidden=True)\n### END HIDDEN TESTS\n"
    assert ms.solutions_view(src) == "def f():\n    return 1\ncheck(f)"


def _graded(grade, tmp_path, notebooks: dict[str, nbformat.NotebookNode]):
    folder = tmp_path / "subs"
    folder.mkdir()
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / name)
    labs = grade.course_labs()
    grade.warm_up(labs)
    paths = sorted(folder.iterdir())
    sandboxed = _sandboxed()
    return {g.submission: g for g in grade.grade_all(paths, labs, jobs=2, timeout=60, root=folder,
                                                     sandboxed=sandboxed)}, labs


def _sandboxed() -> bool:
    """Grade in the sandbox where one can be made (CI: always); elsewhere the same grading, trusted."""
    sys.path.insert(0, str(REPO / "scripts"))
    import sandbox
    reason = sandbox.why_unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"no sandbox in CI: {reason}")
    return reason is None


def _planted(path, old, new):
    nb = nbformat.read(path, as_version=4)
    hits = [c for c in nb.cells if _meta(c).get("solution") and old in c.source]
    assert len(hits) == 1, old
    hits[0].source = hits[0].source.replace(old, new)
    return nb


PLANTED = {   # one mistake per lab: the part it must cost
    "lab1_sparse_optimization": ("return 2.0 * X.T @ (X @ W - y)", "return X.T @ (X @ W - y)", "lab1_b_check"),
    "lab2_pruning": ("return a > torch.quantile(a.flatten(), q)", "return a >= torch.quantile(a.flatten(), q)", "lab2_b_check"),
    "lab3_quantization": ("        return grad, None", "        return torch.zeros_like(grad), None", "lab3_a_check"),
    "lab5_structure": ("    confident = probs.amax(dim=2) >= tau", "    confident = probs.amax(dim=2) > tau", "lab5_c_check"),
}


USES = {"lab3_a_check": ("lab3_d_check", "lab3_f_check")}   # (d) and (f) call (a)'s ste_quantize / StraightThrough


def test_grading_solved_blank_planted_and_broken_submissions(grade, tmp_path):
    subs = {}
    for path in LABS:
        if path.stem not in PLANTED:
            continue
        old, new, _ = PLANTED[path.stem]
        subs[f"solved_{path.name}"] = nbformat.read(path, as_version=4)
        subs[f"blank_{path.name}"] = nbformat.read(REPO / "student" / path.name, as_version=4)
        subs[f"planted_{path.name}"] = _planted(path, old, new)
    graded, labs = _graded(grade, tmp_path, subs)
    for path in LABS:
        if path.stem not in PLANTED:
            continue
        lab, (old, new, wrong) = labs[path.stem], PLANTED[path.stem]
        full = {c: p for c, (_, _, p) in lab.checks.items()}
        assert graded[f"solved_{path.name}"].checks == full
        assert graded[f"blank_{path.name}"].checks == {c: 0.0 for c in full}
        assert all("not written yet" in e for e in graded[f"blank_{path.name}"].errors.values())
        lost = {wrong: 0.0, **{c: 0.0 for c in USES.get(wrong, ())}}    # and the parts that use what it defines
        assert graded[f"planted_{path.name}"].checks == dict(full, **lost), path.stem
        assert full[wrong] > 0 or path.stem == "lab5_structure"   # Lab 5: 0 points by default; its error is named below
        # the self-check in the notebook names the same mistake, in the same words, as the grade
        assert graded[f"planted_{path.name}"].errors[wrong] == _self_check(_planted(path, old, new), lab, wrong)[:400]


def _self_check(nb, lab, check_id) -> str:
    """The message of the notebook's self-check for ``check_id``, run here as the notebook runs it."""
    from labkit import exercises
    ns = {"__name__": "__main__"}
    exec(lab.imports, ns)
    for cell in nb.cells:
        if cell.cell_type == "code" and _meta(cell).get("solution") and _meta(cell).get("grade_id") in lab.solutions:
            exec(cell.source, ns)
    key, name = re.search(r'exercises\.check\("([^"]+)", (\w+)\)', lab.checks[check_id][1]).groups()
    with pytest.raises(exercises.Mistake) as caught:
        exercises.check(key, ns[name])
    return str(caught.value)


def test_a_broken_or_foreign_file_gets_a_line_and_grading_goes_on(grade, tmp_path):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.ipynb").write_text("not json")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "subs" / "b.ipynb")
    hang = _planted(LABS[1], "return target * e / steps", "while True:\n        pass")
    nbformat.write(hang, tmp_path / "subs" / "c.ipynb")
    nbformat.write(nbformat.read(LABS[1], as_version=4), tmp_path / "subs" / "d.ipynb")
    labs = grade.course_labs()
    grade.warm_up(labs)
    paths = sorted((tmp_path / "subs").iterdir())
    got = {g.submission: g for g in grade.grade_all(paths, labs, jobs=2, timeout=8, root=tmp_path / "subs",
                                                    sandboxed=_sandboxed())}
    assert got["a.ipynb"].status.startswith("not a notebook")
    assert got["b.ipynb"].status.startswith("no exercise of any lab")
    assert got["c.ipynb"].status == "graded; a part timed out"            # the hang costs (d) only
    assert got["c.ipynb"].checks == {"lab2_b_check": 6, "lab2_c_sparsity_check": 2, "lab2_c_mask_check": 2,
                                     "lab2_d_check": 0, "lab2_e_check": 6}
    assert got["c.ipynb"].errors["lab2_d_check"] == "timed out after 8 s"
    assert sum(got["d.ipynb"].checks.values()) == labs[LABS[1].stem].points
    header, rows = grade.table(list(got.values()), labs)
    assert header[:3] == ["submission", "lab", "status"] and len(rows) == 4


def test_the_points_are_the_assignments():
    """Per part, the check cells' and the answer cells' points add up to the assignment's."""
    points = {}
    for path in LABS:
        for cell in nbformat.read(path, as_version=4).cells:
            m = _meta(cell)
            if m.get("grade"):
                found = re.match(r"(lab\d)_([a-z])_", m["grade_id"])
                part = found.groups() if found else (m["grade_id"], "")
                points[part] = points.get(part, 0) + m["points"]
    assignment = {"lab1": {"a": 4, "b": 3, "c": 6, "d": 5, "e": 6, "f": 6},
                  "lab2": {"a": 2, "b": 8, "c": 6, "d": 6, "e": 8},
                  "lab3": {"a": 10, "b": 4, "c": 6, "d": 5, "e": 5, "f": 0}}   # (d), (e): the bonus
    got = {lab: {part: points.get((lab, part), 0) for part in parts} for lab, parts in assignment.items()}
    assert got == assignment
    assert [sum(parts.values()) for parts in got.values()] == [30, 30, 30]


# Lab 5 trains its part (a) before its first exercise (minutes, even in the quick profile); its blank checks
# are graded in the test above
@pytest.mark.parametrize("path", [p for p in LABS if p.stem in PLANTED and p.stem != "lab5_structure"], ids=lambda p: p.stem)
def test_a_blank_handout_runs_to_its_first_exercise_and_every_check_fails(path, tmp_path, monkeypatch, data_root):
    """The cells before the first exercise run without error (the quick profile, the course's data);
    then each blank exercise and its checks: every check fails, saying the exercise is not written."""
    from nbclient import NotebookClient
    student = nbformat.read(REPO / "student" / path.name, as_version=4)
    first = next(i for i, c in enumerate(student.cells) if _meta(c).get("solution") and c.cell_type == "code")
    keep = student.cells[:first] + [c for c in student.cells[first:] if c.cell_type == "code" and _meta(c)]
    nb = nbformat.v4.new_notebook(cells=keep, metadata=student.metadata)
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    monkeypatch.setenv("LABKIT_DATA", str(data_root))
    NotebookClient(nb, timeout=300, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "labs")}}).execute()
    errors = lambda c: [o for o in c.get("outputs", []) if o.output_type == "error"]
    for cell in nb.cells[:first]:
        assert not errors(cell), (path.name, cell.source[:80], errors(cell))
    checks = [c for c in nb.cells[first:] if _meta(c).get("grade")]
    assert checks
    for cell in checks:
        assert errors(cell) and "not written yet" in errors(cell)[0].evalue, (path.name, cell.source[:60])


def test_the_concepts_handout_has_ten_answer_cells_of_two_points_graded_by_hand(grade, tmp_path):
    nb = nbformat.read(REPO / "student" / "concepts.ipynb", as_version=4)
    answers = [c for c in nb.cells if _meta(c).get("solution")]
    assert [_meta(c)["grade_id"] for c in answers] == [f"concept_{i}" for i in range(1, 11)]
    assert all(_meta(c)["points"] == 2 and c.source == "YOUR ANSWER HERE" for c in answers)
    answers[5].source = "**True.** Group Lasso zeroes whole groups."
    graded, labs = _graded(grade, tmp_path, {"eve_concepts.ipynb": nb})
    assert graded["eve_concepts.ipynb"].lab == "concepts" and not graded["eve_concepts.ipynb"].checks
    out = tmp_path / "g.answers.md"
    grade.write_answers(out, list(graded.values()), labs)
    text = out.read_text()
    assert "### concept_6 (2 points)" in text and "Group Lasso zeroes whole groups." in text


def test_calling_labkits_reference_or_disabling_the_check_scores_nothing(grade, tmp_path):
    subs = {
        "ref.ipynb": _planted(LABS[0], "    return 2.0 * X.T @ (X @ W - y)", "    return sl.gradient(W, X, y)"),
        "imp.ipynb": _planted(LABS[1], "    a = w.detach().abs().double()\n    return a > torch.quantile(a.flatten(), q)",
                              "    from labkit.prune import keep_mask as k\n    return k(w, q)"),
        "off.ipynb": _planted(LABS[1], "    return target * e / steps",
                              "    return 0.0\nclass _E:\n    check = staticmethod(lambda *a, **k: None)\nexercises = _E\n"
                              "import labkit.exercises as _x\n_x.check = _E.check"),
        "magic.ipynb": _planted(LABS[1], "    return target * e / steps", "    return target * e / steps\n%time x = 1"),
    }
    graded, _ = _graded(grade, tmp_path, subs)
    assert graded["ref.ipynb"].checks["lab1_b_check"] == 0
    assert "labkit's gradient is not available while grading lab1 (b)" in graded["ref.ipynb"].errors["lab1_b_check"]
    assert graded["imp.ipynb"].checks["lab2_b_check"] == 0
    assert "labkit's keep_mask is not available while grading lab2 (b)" in graded["imp.ipynb"].errors["lab2_b_check"]
    assert graded["off.ipynb"].checks["lab2_d_check"] == 0 and graded["off.ipynb"].checks["lab2_b_check"] == 6
    assert graded["magic.ipynb"].checks["lab2_d_check"] == 4


def test_only_notebooks_outside_hidden_folders_are_submissions(grade, tmp_path):
    (tmp_path / "alice" / ".ipynb_checkpoints").mkdir(parents=True)
    for p in ("alice/lab2_pruning.ipynb", "alice/.ipynb_checkpoints/lab2_pruning-checkpoint.ipynb", "alice/timestamp.txt"):
        (tmp_path / p).write_text("{}")
    assert [p.relative_to(tmp_path).as_posix() for p in grade.submissions(tmp_path)] == ["alice/lab2_pruning.ipynb"]
