"""The course site builds strictly (the ``book_html`` fixture: any Sphinx warning, e.g. a broken
reference, a bad heading or a missing page, fails the build, as in CI) and holds what it must:
every chapter of the table of contents, the notebooks' plots, math served from the site itself,
no test marker or machine path in the text. tests/test_site.py opens the same build in Chromium."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def toc_pages() -> list[str]:
    """Every ``file:`` of _toc.yml (and its root), as the html page it becomes."""
    text = (REPO / "_toc.yml").read_text(encoding="utf-8")
    files = re.findall(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)", text, flags=re.M)
    assert files, "_toc.yml lists no file"
    return [f"{f}.html" for f in files]


@pytest.mark.book
def test_every_chapter_of_the_toc_is_built(book_html):
    pages = {p.relative_to(book_html).as_posix() for p in book_html.rglob("*.html")}
    for page in toc_pages() + ["book/results.html", "book/references.html"]:
        assert page in pages, f"{page} missing from the site"


@pytest.mark.book
def test_lab_pages_show_their_plots(book_html):
    for notebook in sorted((REPO / "labs").glob("lab*.ipynb")):
        page = book_html / "labs" / f"{notebook.stem}.html"
        if f"labs/{notebook.stem}.html" in toc_pages():
            assert "<img" in page.read_text(encoding="utf-8"), f"{notebook.stem}'s page shows no plot"


@pytest.mark.book
def test_mathjax_is_served_by_the_site(book_html):
    html = (book_html / "book" / "lab1_theory.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', html, flags=re.I)
    assert scripts, "the page loads no MathJax"
    assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), f"MathJax from the network: {scripts}"
    assert (book_html / "book" / scripts[0]).resolve().is_file(), f"{scripts[0]} is not in the site"


@pytest.mark.book
def test_no_test_marker_or_machine_path_in_the_text(book_html):
    """What a reader sees (tags stripped; cell tags do remain as CSS classes, unseen)."""
    for page in book_html.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        text = re.sub(r"<(script|style)\b.*?</\1>|<[^>]+>", " ", html, flags=re.S | re.I)
        for needle in ["NBVAL", "nbval", "/work/", "/root/", "/home/"]:
            assert needle not in text, f"{page.relative_to(book_html)} shows {needle!r}"


@pytest.mark.book
def test_the_solutions_site_hides_the_markers_and_offers_the_handouts(book_html):
    for page in (book_html / "labs").glob("lab*.html"):
        html = page.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in html and "HIDDEN TESTS" not in html, page.name
    import html as html_lib
    lab2 = html_lib.unescape(re.sub(r"<[^>]+>", "", (book_html / "labs" / "lab2_pruning.html").read_text(encoding="utf-8")))
    assert "return a > torch.quantile(a.flatten(), q)" in lab2     # the solution, without its markers
    handouts = (book_html / "book" / "handouts.html").read_text(encoding="utf-8")
    for notebook in sorted((REPO / "student").glob("*.ipynb")):
        links = re.findall(rf'href="(\.\./_downloads/[^"]*/{notebook.name})"', handouts)
        assert links, f"the Handouts page offers no download of {notebook.name}"
        assert (book_html / "book" / links[0]).resolve().read_bytes() == notebook.read_bytes()


@pytest.mark.book
def test_the_handout_site_shows_the_student_notebooks_and_no_answers(handout_html):
    import html as html_lib
    text = lambda page: html_lib.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
    lab2 = text(handout_html / "labs" / "lab2_pruning.html")
    assert "raise NotImplementedError()" in lab2 and "YOUR ANSWER HERE" in lab2
    assert "return a > torch.quantile(a.flatten(), q)" not in lab2          # no solution
    assert "cell_output docutils container" not in (handout_html / "labs" / "lab2_pruning.html").read_text(encoding="utf-8")   # no output
    assert not list(handout_html.rglob("_sources/labs/*")), "the handout site copies the solved notebooks"
    raw = (handout_html / "labs" / "lab2_pruning.html").read_text(encoding="utf-8")
    assert "colab.research.google.com" not in raw and "mybinder" not in raw and "_sources/labs" not in raw
    concepts = text(handout_html / "book" / "concepts.html")
    assert "is on the solutions site once the assignment is over" in concepts
    assert "orthogonal" in concepts and "They change different things" not in concepts
