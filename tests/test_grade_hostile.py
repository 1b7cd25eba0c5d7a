"""The grader against hostile submissions, graded in one run beside honest ones (scripts/grade.py in
its bubblewrap sandbox): every honest grade is exact, every forged part scores 0, nothing outside the
submissions changes, no process is left, and the grades files are safe to read.

Each hostile notebook is the solved Lab 1 (or Lab 2) with one exercise cell replaced by an attack; the
attacked part must score 0 (its function is wrong, or right only if the attack worked), and the other
parts keep their points unless they use what the attacked cell defines.
"""
import csv
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

import course_scripts

REPO = Path(__file__).resolve().parents[1]
LAB1 = REPO / "labs" / "lab1_sparse_optimization.ipynb"
LAB2 = REPO / "labs" / "lab2_pruning.ipynb"
MARK = "labkit-hostile-marker"
WRONG = "    return X.T @ (X @ W - y)\n"      # Lab 1 (b) with its factor 2 missing: a wrong gradient


@pytest.fixture(scope="module")
def grade():
    reason = course_scripts.load("sandbox").why_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"no sandbox in CI: {reason} (.ci/run installs bubblewrap)")
        pytest.skip(f"no sandbox here: {reason}")
    return course_scripts.load("grade")


def _cell(nb, grade_id):
    meta = lambda c: c.get("metadata", {}).get("nbgrader", {})
    return next(c for c in nb.cells if isinstance(meta(c), dict) and meta(c).get("grade_id") == grade_id)


def _lab1(grade_id=None, body=None):
    """The solved Lab 1, its exercise cell ``grade_id`` replaced by ``body``."""
    nb = nbformat.read(LAB1, as_version=4)
    if grade_id:
        _cell(nb, grade_id).source = body
    return nb


def _gradient(attack: str, *, then: str = WRONG) -> str:
    """Lab 1 (b)'s cell: an attack, then a gradient function (wrong unless the attack says otherwise)."""
    return f"{attack}\ndef gradient(W, X, y):\n{then}"


RIGHT_IF_OK = "    return (2.0 if _ok else 1.0) * X.T @ (X @ W - y)\n"   # right only if the attack worked
FULL1 = {"lab1_b_check": 3, "lab1_c_check": 4, "lab1_d_check": 3, "lab1_e_check": 4, "lab1_f_check": 4}


def _tree(*folders) -> dict[str, str]:
    """SHA-256 of every file below the folders (what must not change)."""
    out = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and ".venv" not in path.parts and "__pycache__" not in path.parts \
                    and ".pytest_cache" not in path.parts:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def graded(grade, tmp_path_factory):
    """One grading run over the hostile folder and its honest neighbours."""
    tmp = tmp_path_factory.mktemp("hostile")
    subs = tmp / "submissions"
    subs.mkdir()
    outside = tmp / "instructor"                    # the instructor's own files, beside the submissions
    outside.mkdir()
    (outside / "notes.txt").write_text("keep me")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections = []

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                pass
    stop = threading.Event()
    listener = threading.Thread(target=accept, daemon=True)
    listener.start()

    notebooks = {
        "honest_solved.ipynb": _lab1(),
        "honest_blank.ipynb": nbformat.read(REPO / "student" / LAB1.name, as_version=4),
        "honest_mistake.ipynb": _lab1("lab1_b_solution", _gradient("")),
        "honest_lab2.ipynb": nbformat.read(LAB2, as_version=4),
        # honest but messy: a cell that runs a test line, an unfinished part, another part's reference
        "messy_unfinished.ipynb": _lab1("lab1_f_solution", "def trimmed_l1_step(W, g, lr, lam, k):\n"
                                        "    raise NotImplementedError()\nv = np.ones(3)\nprint(trimmed_l1_step(v, v, 0.1, 1.0, 1))\n"),
        "messy_test_line.ipynb": _lab1("lab1_f_solution", _cell(_lab1(), "lab1_f_solution").source
                                       + "\nprint(trimmed_l1_step(np.ones(3), np.ones(3), 0.1, 1.0))\n"),
        "other_reference.ipynb": _lab1("lab1_f_solution", "def trimmed_l1_step(W, g, lr, lam, k):\n    v = W - lr * g\n"
                                       "    big = sl.project_top_k(v, k) != 0\n    return np.where(big, v, soft_threshold(v, lr * lam))\n"),
        # in-process patching: the checker, numpy, the registered reference, builtins
        "patch_checker.ipynb": _lab1("lab1_b_solution", _gradient(
            "import labkit.exercises as _x\n_x.judge = lambda *a, **k: 'passed'\n_x.check = lambda *a, **k: None\n"
            "_x.Mistake = type('M', (Exception,), {})")),
        "patch_numpy.ipynb": _lab1("lab1_b_solution", _gradient(
            "import numpy as _np, torch as _t\n_np.allclose = lambda *a, **k: True\n_np.array_equal = lambda *a, **k: True\n"
            "_np.isclose = lambda a, b, **k: _np.ones(_np.shape(a), bool)\n_t.equal = lambda *a: True")),
        "patch_reference.ipynb": _lab1("lab1_b_solution", _gradient(
            "from labkit import exercises as _x, sparse_linear as _sl\nimport dataclasses\n"
            "_x.EXERCISES['lab1 (b)'] = dataclasses.replace(_x.EXERCISES['lab1 (b)'], reference=lambda W, X, y: X.T @ (X @ W - y))\n"
            "_sl.gradient = lambda W, X, y: X.T @ (X @ W - y)")),
        # labkit's reference under another name, or read from its source
        "reference_alias.ipynb": _lab1("lab1_b_solution",
            "import labkit.sparse_linear as _s\n_g = _s.gradient\ndef gradient(W, X, y):\n    return _g(W, X, y)\n"),
        "reference_source.ipynb": _lab1("lab1_b_solution",
            "import labkit, pathlib\n_ns = {}\nexec(pathlib.Path(labkit.__file__).with_name('sparse_linear.py').read_text(), _ns)\n"
            "gradient = _ns['gradient']\n"),
        # the solved notebooks and hidden tests: right only if the solutions can be read
        "steal_solutions.ipynb": _lab1("lab1_b_solution", _gradient(
            "import glob, json\n_src = [p for p in glob.glob('/**/lab1_sparse_optimization.ipynb', recursive=True)]\n"
            "_ok = any('2.0 * X.T' in open(p).read() for p in _src)", then=RIGHT_IF_OK)),
        # the grader's pipes and memory: forged answers on stdout, the runner's descriptors
        "forge_pipes.ipynb": _lab1("lab1_b_solution", _gradient(
            "import os, json\nfor _fd in range(1, 64):\n    try:\n        os.write(_fd, b'{\"id\": \"lab1_b_check\", \"status\": \"ok\", \"message\": \"\", \"sizes\": []}\\n')\n    except OSError:\n        pass\n"
            "for _p in os.listdir('/proc'):\n    try:\n        os.write(os.open(f'/proc/{_p}/fd/1', os.O_WRONLY), b'forged\\n')\n    except (OSError, ValueError):\n        pass\n"
            "import sys\n_f = sys._getframe()\nwhile _f is not None:\n    for _v in list(_f.f_locals.values()):\n"
            "        if hasattr(_v, 'write') and hasattr(_v, 'flush'):\n            try:\n                _v.write(b'forged\\n'); _v.flush()\n"
            "            except Exception:\n                pass\n    _f = _f.f_back")),
        # early exit: costs that cell's part only
        "exit_early.ipynb": _lab1("lab1_c_solution", "import os\nos._exit(0)\n"),
        "exit_sys.ipynb": _lab1("lab1_c_solution", "import sys\nsys.exit(0)\n"),
        "kill_group.ipynb": _lab1("lab1_c_solution", "import os, signal\nos.kill(-1, signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n"),
        # files outside the submission, another submission, the grades
        "write_outside.ipynb": _lab1("lab1_b_solution", _gradient(
            f"import os, glob, shutil\nfor _p in glob.glob('{subs}/*') + glob.glob('{outside}/*') + glob.glob('{REPO}/labs/*') "
            f"+ glob.glob(os.path.expanduser('~') + '/*'):\n    try:\n        os.remove(_p)\n    except OSError:\n        pass\n"
            f"for _p in ['{subs}/honest_solved.ipynb', '{outside}/notes.txt', '{REPO}/README.md', 'grades.csv', '/tmp/{MARK}']:\n"
            f"    try:\n        open(_p, 'w').write('{MARK}')\n    except OSError:\n        pass")),
        # network: right only if a server on 127.0.0.1 answers
        "network.ipynb": _lab1("lab1_b_solution", _gradient(
            f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    _ok = True\nexcept OSError:\n    _ok = False",
            then=RIGHT_IF_OK)),
        # processes that would outlive grading
        "orphans.ipynb": _lab1("lab1_b_solution", _gradient(
            f"import subprocess, os\nsubprocess.Popen(['sleep', '300', '{MARK}'], start_new_session=True)\n"
            f"if os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(300)\n    os._exit(0)")),
        # memory, disk, processes
        "memory.ipynb": _lab1("lab1_b_solution", _gradient(
            "try:\n    _x = bytearray(4 << 30)\n    _ok = True\nexcept MemoryError:\n    _ok = False", then=RIGHT_IF_OK)),
        "disk.ipynb": _lab1("lab1_b_solution", _gradient(
            "import os\n_ok = True\nfor _d in ['/tmp', os.path.expanduser('~')]:\n    for _i in range(10):\n        try:\n"
            "            with open(f'{_d}/fill{_i}', 'wb') as f:\n                f.write(b'x' * (10 << 20))\n"
            "        except OSError:\n            _ok = False", then=RIGHT_IF_OK)),
        "processes.ipynb": _lab1("lab1_b_solution", _gradient(
            "import os, time\n_pids = []\ntry:\n    for _ in range(20):\n        _p = os.fork()\n        if _p == 0:\n"
            "            time.sleep(2)\n            os._exit(0)\n        _pids.append(_p)\n    _ok = True\nexcept OSError:\n    _ok = False",
            then=RIGHT_IF_OK)),
        "fork_bomb.ipynb": _lab1("lab1_c_solution", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"),
        "hang.ipynb": _lab1("lab1_d_solution", "while True:\n    pass\n"),
        "stop_runner.ipynb": _lab1("lab1_b_solution", _gradient(
            "import os, signal\nfor _p in os.listdir('/proc'):\n    if _p.isdigit() and int(_p) not in (1, os.getpid()):\n"
            "        try:\n            os.kill(int(_p), signal.SIGSTOP)\n        except OSError:\n            pass")),
        # console, CSV and Markdown injection
        "=HYPERLINK(1)\x1b[2J.ipynb": _lab1("lab1_b_solution", _gradient(
            "raise RuntimeError('\\x1b[2J\\rhonest_solved.ipynb: 30/30 points\\n=cmd|calc')")),
    }
    answer = _lab1()
    _cell(answer, "lab1_a_answer").source = ("## forged section\n\n# top\n<script>alert(1)</script>\n```\n"
                                             "### lab1_a_answer (4 points)\n```")
    notebooks["answers_injection.ipynb"] = answer
    bad = _lab1()
    bad.cells[3].metadata["nbgrader"] = ["not", "a", "dict"]
    _cell(bad, "lab1_c_solution").metadata["nbgrader"]["grade_id"] = 7
    notebooks["bad_metadata.ipynb"] = bad
    for name, nb in notebooks.items():
        nbformat.write(nb, subs / name)
    (subs / "not_json.ipynb").write_text("{ not a notebook")
    (subs / "cells_not_list.ipynb").write_text('{"cells": {"a": 1}, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (subs / "linked.ipynb").symlink_to(LAB1)     # a link out of the folder: not followed
    before = _tree(REPO / "labs", REPO / "student", REPO / "labkit", REPO / "scripts", outside)
    before_subs = _tree(subs)
    out = tmp / "grades.csv"
    env = dict(os.environ, LABKIT_PROGRESS="off")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "grade.py"), str(subs), "--out", str(out),
                             "--jobs", "2", "--timeout", "10"], capture_output=True, text=True, env=env, timeout=900)
    stop.set()
    listener.join()
    server.close()
    left = subprocess.run(["pgrep", "-f", MARK], capture_output=True, text=True).stdout.split()
    rows = list(csv.reader(out.open(encoding="utf-8"))) if out.exists() else []
    return {"result": result, "rows": rows, "header": rows[0] if rows else [], "out": out,
            "answers": out.with_suffix(".answers.md"), "connections": connections, "left": left,
            "changed": _differ(before, _tree(REPO / "labs", REPO / "student", REPO / "labkit", REPO / "scripts", outside)),
            "subs_changed": before_subs != _tree(subs), "marker": Path("/tmp", MARK).exists()}


def _differ(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _row(graded, name):
    header = graded["header"]
    for row in graded["rows"][1:]:
        if row[0].lstrip("'") == name:
            return dict(zip(header, row))
    raise AssertionError(f"no row for {name!r}: {[r[0] for r in graded['rows']]}")


def test_the_grading_run_finishes_and_writes_both_files(graded):
    assert graded["result"].returncode == 0, graded["result"].stderr[-3000:]
    assert graded["out"].exists() and graded["answers"].exists()


def test_honest_grades_are_exact(graded):
    solved = _row(graded, "honest_solved.ipynb")
    assert solved["total (checks)"] == "30" or solved["total (checks)"] == str(sum(FULL1.values()))
    assert _row(graded, "honest_blank.ipynb")["total (checks)"] == "0"
    assert _row(graded, "honest_mistake.ipynb")["total (checks)"] == str(sum(FULL1.values()) - 3)
    lab2 = _row(graded, "honest_lab2.ipynb")
    assert lab2["total (checks)"] == lab2["max (checks)"]


@pytest.mark.parametrize("name", ["patch_checker", "patch_numpy", "patch_reference", "reference_alias",
                                  "reference_source", "steal_solutions", "forge_pipes", "write_outside",
                                  "network", "orphans", "memory", "disk", "processes", "stop_runner",
                                  "=HYPERLINK(1)\x1b[2J"])
def test_a_forged_part_scores_nothing_and_the_others_keep_theirs(graded, name):
    row = _row(graded, f"{name}.ipynb")
    assert row["lab1_sparse_optimization (b)"].startswith("0/3"), row
    assert row["total (checks)"] == str(sum(FULL1.values()) - 3), row


def test_honest_but_messy_cells_are_graded_on_their_functions(graded):
    """A top-level test line that fails after the def costs nothing; an unfinished part costs that part;
    a part that needs another part's reference (labkit's) is refused, naming the part being graded."""
    assert _row(graded, "messy_test_line.ipynb")["total (checks)"] == str(sum(FULL1.values()))
    assert _row(graded, "messy_unfinished.ipynb")["total (checks)"] == str(sum(FULL1.values()) - 4)
    assert _row(graded, "other_reference.ipynb")["total (checks)"] == str(sum(FULL1.values()) - 4)
    assert "labkit's project_top_k is not available while grading lab1 (f)" in graded["result"].stdout


def test_calling_the_reference_under_another_name_is_named(graded):
    text = graded["result"].stdout
    assert "labkit's gradient is not available while grading lab1 (b)" in text


@pytest.mark.parametrize("name", ["exit_early", "exit_sys", "kill_group", "fork_bomb"])
def test_an_exit_or_a_crash_costs_that_cells_part_only(graded, name):
    row = _row(graded, f"{name}.ipynb")
    assert row["lab1_sparse_optimization (c)"].startswith("0/"), row
    assert row["total (checks)"] == str(sum(FULL1.values()) - FULL1["lab1_c_check"]), row


def test_a_hang_costs_its_part_and_says_so(graded):
    row = _row(graded, "hang.ipynb")
    assert row["total (checks)"] == str(sum(FULL1.values()) - FULL1["lab1_d_check"]), row
    assert "timed out" in row["status"]


def test_nothing_outside_the_submissions_changed_and_no_process_is_left(graded):
    assert graded["changed"] == [] and not graded["subs_changed"] and not graded["marker"]
    assert graded["left"] == [], graded["left"]
    assert graded["connections"] == []


def test_malformed_files_get_a_line_and_the_class_is_graded(graded):
    assert _row(graded, "not_json.ipynb")["status"].startswith("not a notebook")
    assert _row(graded, "cells_not_list.ipynb")["status"].startswith("not a notebook")
    bad = _row(graded, "bad_metadata.ipynb")             # its (c) cell lost its id: that part only
    assert bad["total (checks)"] == str(sum(FULL1.values()) - FULL1["lab1_c_check"]), bad
    assert "symbolic link" in _row(graded, "linked.ipynb")["status"]


def test_the_console_csv_and_answers_cannot_be_forged(graded):
    out = graded["result"].stdout
    assert "\x1b" not in out and "\r" not in out
    assert "\\x1b[2J" in out                              # shown escaped
    for row in graded["rows"]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), cell
    raw = graded["out"].read_text(encoding="utf-8")
    assert '"\'=HYPERLINK(1)' in raw
    md = graded["answers"].read_text(encoding="utf-8")
    headings = _headings(md)
    assert not any("forged" in h or h.startswith("# top") for h in headings), headings
    mine = re.split(r"\n## [^\n]*\.ipynb \(", md[md.index("answers\\_injection"):])[0]
    assert _headings(mine).count("### lab1_a_answer (4 points)") == 1 and "<script>" in mine   # quoted, as text
    assert "````text" in mine                              # a fence longer than the ``` inside the answer


def _headings(md: str) -> list[str]:
    """The Markdown headings outside fenced blocks (a fence closes only on its own backticks)."""
    headings, fence = [], None
    for line in md.splitlines():
        if fence is None and line.startswith("```"):
            fence = line[:len(line) - len(line.lstrip("`"))]
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None and line.startswith("#"):
            headings.append(line)
    assert fence is None, "a fence left open"
    return headings
