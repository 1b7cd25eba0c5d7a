"""The built course site in a real browser: headless Chromium (Debian's ``chromium``, a fresh
profile, no background networking) opens every page of the table of contents from a local
server, offline, and checks what a reader would see:

- the page loads, and nothing it asks for (image, script, style sheet, font) is missing;
- MathJax, served by the site itself, typeset every formula: no raw TeX is left, no TeX error;
- every image loads; every internal link leads to a page (and anchor) that exists;
- no test marker (``NBVAL``) or machine path (``/work/``, ``/root/``, ``/home/``) is visible;
- wide content is reachable: an output or table wider than the column scrolls, with a cue
  that it does (a visible scrollbar or the site's edge shadow), and is never cut off; display
  equations fit the column;
- the Concepts page folds its answers.

Folded answers are opened before checking, so that they are checked too. Screenshots of the
home page and of each lab's page go to ``_build/screenshots/``. The site is the one built by the
``book_html`` fixture (tests/conftest.py), shared with tests/test_book.py.
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from headless_chromium import Chromium, StaticServer, find_chromium
from test_book import toc_pages

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "_build" / "screenshots"
MARKERS = ["NBVAL", "nbval", "/work/", "/root/", "/home/"]

pytestmark = pytest.mark.book

# Runs in the page after its load event; returns what the tests assert on.
INSPECT = r"""
(async () => {
  const r = {title: document.title};
  // Folded content (dropdown answers, hidden cells) is opened so that it is checked as well.
  r.folded = document.querySelectorAll('.admonition.dropdown.toggle-hidden').length;
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  document.querySelectorAll('details').forEach(d => { d.open = true; });

  // Math: every Sphinx math element holds MathJax output, no TeX error, no raw TeX in the text.
  r.mathjax = !!(window.MathJax && MathJax.startup);
  if (r.mathjax) await MathJax.startup.promise;
  const maths = [...document.querySelectorAll('.math')];
  r.math = maths.length;
  r.typeset = document.querySelectorAll('mjx-container').length;
  r.untypeset = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 80));
  r.texErrors = [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80));
  const skip = 'pre, code, script, style, textarea, mjx-container, .math';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT,
    {acceptNode: n => n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const rawTex = /\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{|\$\$|\\frac|\\math[a-z]+\{|\$[^$\s][^$]*[\\^_][^$]*\$/;
  r.rawTex = [];
  for (let n; (n = walker.nextNode());) if (rawTex.test(n.textContent)) r.rawTex.push(n.textContent.trim().slice(0, 80));

  // Images: force lazy ones to load, wait for all (10 s at most), then ask which did not decode.
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  const settled = Promise.all(imgs.map(i => i.complete ? null : new Promise(ok => { i.onload = i.onerror = ok; })));
  await Promise.race([settled, new Promise(ok => setTimeout(ok, 10000))]);
  r.images = imgs.length;
  r.brokenImages = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));

  // Links within the site.
  r.links = [...new Set([...document.querySelectorAll('a[href]')].map(a => a.href)
    .filter(h => h.startsWith(location.origin)))];

  // What a reader sees.
  r.markers = MARKERS.filter(s => document.body.innerText.includes(s));

  // Wide content: reachable by scrolling (with a visible scrollbar), never cut off.
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const right = article.getBoundingClientRect().right;
  const describe = e => e.tagName.toLowerCase() + ': ' + e.textContent.trim().replace(/\s+/g, ' ').slice(0, 60);
  r.clipped = []; r.noScrollbar = []; r.wideEquations = [];
  for (const el of article.querySelectorAll('pre, table, .cell_output, .output, mjx-container[display="true"], img')) {
    if (el.offsetParent === null) continue;                     // not rendered
    let scroller = null, cut = false;
    for (let e = el; e && e !== article.parentElement; e = e.parentElement) {
      if (e.scrollWidth > e.clientWidth + 1) {
        const ox = getComputedStyle(e).overflowX;
        if (ox === 'auto' || ox === 'scroll') { scroller = e; break; }
        if (ox === 'hidden' || ox === 'clip') { cut = true; break; }
      }
    }
    if (cut || (!scroller && el.getBoundingClientRect().right > right + 1)) r.clipped.push(describe(el));
    else if (scroller && !el.matches('mjx-container') && !(scroller.offsetHeight - scroller.clientHeight >= 4
                           || getComputedStyle(scroller).backgroundImage.includes('gradient')))
      r.noScrollbar.push(describe(el));                           // scrolls, but nothing says so
    if (el.matches('mjx-container') && el.scrollWidth > el.clientWidth + 1) r.wideEquations.push(describe(el));
  }
  r.dropdowns = document.querySelectorAll('.admonition.dropdown').length;
  return r;
})()
""".replace("MARKERS", repr(MARKERS))


@pytest.fixture(scope="session")
def site(book_html, tmp_path_factory):
    """Every page of the toc opened once in headless Chromium: ``{page: report}``, the server's
    missing paths, and the screenshots taken."""
    executable = find_chromium()
    if executable is None:
        message = "Chromium not found: install Debian's `chromium` (.ci/run does) to check the site in a browser"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pages = toc_pages()
    lab_pages = [p for p in pages if p.startswith("labs/")]
    reports, shots = {}, []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with StaticServer(book_html) as server, Chromium.launch(tmp_path_factory.mktemp("chromium"), executable) as browser:
        for page in pages:
            browser.open(server.url(page))
            if page == pages[0] or page in lab_pages:                # home and one page per lab
                shots.append(browser.screenshot(SCREENSHOTS / (Path(page).stem + ".png")))
            reports[page] = browser.evaluate(INSPECT)
        links = _check_links(server, {link for r in reports.values() for link in r["links"]})
        missing = sorted(set(server.missing) - {"/favicon.ico"})     # the browser asks for it unprompted
    return {"reports": reports, "missing": missing, "broken_links": links, "shots": shots, "labs": lab_pages}


def _check_links(server, links) -> list[str]:
    """Internal links whose page does not exist, or whose #anchor is not in it."""
    broken, pages = [], {}
    for link in sorted(links):
        url, _, fragment = link.partition("#")
        if url not in pages:
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    pages[url] = response.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as error:
                pages[url] = None
                broken.append(f"{link} ({error.code})")
                continue
        html = pages[url]
        if html is not None and fragment and url.endswith(".html"):
            anchor = re.escape(urllib.parse.unquote(fragment))
            if not re.search(rf'\b(id|name)="{anchor}"', html):
                broken.append(f"{link} (no such anchor)")
    return broken


def _failures(site, key) -> dict[str, list]:
    return {page: r[key] for page, r in site["reports"].items() if r[key]}


def test_every_page_loads_with_everything_it_asks_for(site):
    assert all(r["title"] for r in site["reports"].values()), "a page has no title"
    assert site["missing"] == [], f"requested but not in the site: {site['missing']}"


def test_mathjax_typeset_every_formula(site):
    reports = site["reports"]
    assert reports["book/lab1_theory.html"]["typeset"] > 50, "Lab 1's theory page shows no typeset math"
    for page, r in reports.items():
        if r["math"]:
            assert r["mathjax"], f"{page} has math but no MathJax"
    assert _failures(site, "untypeset") == {}, "formulas MathJax did not typeset"
    assert _failures(site, "texErrors") == {}, "TeX errors"
    assert _failures(site, "rawTex") == {}, "raw TeX visible in the text"


def test_every_image_loads(site):
    assert sum(r["images"] for r in site["reports"].values()) > 0
    assert _failures(site, "brokenImages") == {}


def test_no_internal_link_is_broken(site):
    assert sum(len(r["links"]) for r in site["reports"].values()) > 0
    assert site["broken_links"] == []


def test_no_test_marker_or_machine_path_is_visible(site):
    assert _failures(site, "markers") == {}


def test_wide_content_is_reachable(site):
    assert _failures(site, "clipped") == {}, "content cut off or spilling out of the column"
    assert _failures(site, "noScrollbar") == {}, "wide content scrolls with no cue that it does"
    assert _failures(site, "wideEquations") == {}, "display equations wider than the column"


def test_concepts_fold_their_answers(site):
    concepts = site["reports"]["book/concepts.html"]
    assert concepts["dropdowns"] == 10 and concepts["folded"] == 10


def test_screenshots_of_home_and_each_lab(site):
    assert site["labs"], "no lab page in the toc"
    assert len(site["shots"]) == 1 + len(site["labs"])
    for shot in site["shots"]:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000, shot
