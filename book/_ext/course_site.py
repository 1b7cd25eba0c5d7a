"""Sphinx extension of the course site: how the lab notebooks show their exercises.

The solutions site (the default) shows every solved cell without nbgrader's markers
(``### BEGIN SOLUTION`` / ``### END SOLUTION``) and without the hidden tests. The handout site,
``LABKIT_SITE=handout`` (``make book SITE=handout``), shows each lab as its student notebook
(scripts/make_student.py): exercises blank, answer cells empty, no outputs. Both rewrite the
notebook as Sphinx reads it (the ``source-read`` event); the files in labs/ are never changed.

Sphinx copies each page's *original* source into ``_sources/`` (the download button's ``.ipynb``), so
at the end of a build the solutions site's copies of the notebooks are rewritten the same way: the
download holds no nbgrader marker and no hidden test. Every build also writes the labkit wheel that the
handouts install (``make_student.build_wheel``) at the site's root: published at
``labkit_handout_url`` (_config.yml), the handout site serves it.
"""
import functools
import importlib.util
import json
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITES = ("solutions", "handout")


@functools.lru_cache(maxsize=None)
def _make_student():
    spec = importlib.util.spec_from_file_location("make_student", REPO / "scripts" / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ANSWER = re.compile(r"^:::\{admonition\} Answer\n.*?^:::\n", re.M | re.S)


def _rewrite(app, docname, source):
    if docname == "book/concepts" and app.config.labkit_site == "handout":
        source[0] = ANSWER.sub(":::{note}\nThe answer is on the solutions site once the assignment is over.\n:::\n", source[0])
        return
    if not docname.startswith("labs/"):
        return
    ms = _make_student()
    if app.config.labkit_site == "handout":
        import nbformat
        nb = ms.student_edition(nbformat.reads(source[0], as_version=4), Path(docname).name)
        source[0] = nbformat.writes(nb)
        return
    source[0] = solutions_notebook(source[0])


def solutions_notebook(text: str) -> str:
    """A solved notebook's JSON as the solutions site shows it: every code cell's solutions_view."""
    ms = _make_student()
    nb = json.loads(text)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = ms.solutions_view(source)
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"


def _finish(app, exception):
    """The downloads of the solutions site without markers and hidden tests; the wheel at the root."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    for path in sorted((out / "_sources").rglob("*.ipynb*")):     # .ipynb, or .ipynb.txt with a suffix
        path.write_text(solutions_notebook(path.read_text(encoding="utf-8")), encoding="utf-8")
    ms = _make_student()
    (out / ms.wheel_name()).write_bytes(ms.build_wheel())


def _handout_config(app, config):
    """The handout site offers no solved source: no copied sources, no download of the page's
    notebook, no launch buttons (they open labs/ in the repository); the Handouts page's downloads
    are the student notebooks."""
    if config.labkit_site != "handout":
        return
    config.html_copy_source = False
    options = dict(config.html_theme_options or {})
    options["use_download_button"] = False
    options["launch_buttons"] = {}
    config.html_theme_options = options


def setup(app):
    site = os.environ.get("LABKIT_SITE", "solutions")
    if site not in SITES:
        raise ValueError(f"LABKIT_SITE={site!r}: the site is one of {SITES}")
    app.add_config_value("labkit_site", site, "env")
    app.add_config_value("labkit_handout_url", "", "env")     # where the handouts install labkit from
    app.connect("build-finished", _finish)
    app.connect("config-inited", _handout_config)
    app.connect("source-read", _rewrite)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
