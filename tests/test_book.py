"""The course site builds strictly: any Sphinx warning (a broken reference, a bad heading,
a missing page) fails the build, as in CI."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.book
def test_book_builds_with_no_warning(tmp_path):
    # the jupyter-book script installed beside this Python (jupyter_book has no __main__)
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    assert exe, "jupyter-book is not installed: run `make install`"
    cmd = [exe, "build", str(REPO), "--path-output", str(tmp_path), "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    pages = {p.relative_to(html).as_posix() for p in html.rglob("*.html")}
    for page in ["book/intro.html", "book/concepts.html", "book/lab1_theory.html",
                 "labs/lab1_sparse_optimization.html", "book/lab2_theory.html", "labs/lab2_pruning.html"]:
        assert page in pages, f"{page} missing from the site"
    for lab in ["lab1_sparse_optimization", "lab2_pruning"]:
        assert "<img" in (html / "labs" / f"{lab}.html").read_text(), f"{lab}'s page shows no plot"
    assert "math notranslate" in (html / "book" / "lab1_theory.html").read_text(), "no rendered math"
