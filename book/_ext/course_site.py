"""Sphinx extension of the course site: how the lab notebooks show their exercises.

The solutions site (the default) shows every solved cell without nbgrader's markers
(``### BEGIN SOLUTION`` / ``### END SOLUTION``) and without the hidden tests. The handout site,
``LABKIT_SITE=handout`` (``make book SITE=handout``), shows each lab as its student notebook
(scripts/make_student.py): exercises blank, answer cells empty, no outputs. Both rewrite the
notebook as Sphinx reads it (the ``source-read`` event); the files in labs/ are never changed.
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
    nb = json.loads(source[0])
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = ms.solutions_view(text)
    source[0] = json.dumps(nb)


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
    app.connect("config-inited", _handout_config)
    app.connect("source-read", _rewrite)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
