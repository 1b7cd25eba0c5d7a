"""Write the book's results page, book/results.md, from what the reference runs recorded.

    python scripts/make_results.py            # (re)write book/results.md
    python scripts/make_results.py --check    # exit 1 if book/results.md is not what this writes

Each notebook's reference run (full profile) saves ``labs/results/<lab>.json`` through
``labkit.report.Results``; CI-profile runs write ``labs/results/ci/`` and are never read here.
The page has one section per lab notebook in ``labs/``: the run (date, device, precision, data,
seeds, time) and a table of every entry, with the course reference solution's number beside
ours where the key matches (``scripts/course_reference.json``). A lab without its JSON file
says "not yet run". Nothing on the page is typed by hand: ``make book`` regenerates it and a
test checks that the committed page is what this script writes.

A results file looks like::

    {"lab": "lab2", "title": "...",
     "run": {"date": "2026-11-25 22:10 UTC", "profile": "full", "device": "cpu (x86_64, 2 threads)",
             "precision": "...", "train_images": 5085, "test_images": 1017, "torch": "2.13.0",
             "seeds": [0, 1, 2], "minutes": 18.3},
     "entries": [{"key": "fp", "part": "(a)", "label": "pretrained model", "value": 0.9164,
                  "std": null, "n": 1, "unit": "acc"}, ...]}

``unit`` "acc" is an accuracy fraction, shown in percent (± the standard deviation over ``n``
seeds when ``std`` is given); any other unit ("bytes", "x", "ms", ...) is shown as it is.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "book" / "results.md"
REFERENCE = Path(__file__).resolve().with_name("course_reference.json")
_LAB_NOTEBOOK = re.compile(r"^(lab\d+)_.*\.ipynb$")


# --- inputs -------------------------------------------------------------------------------------

def discover_labs(labs_dir: Path) -> dict[str, dict]:
    """``{lab: {"title", "notebook"}}`` for every ``labs/labN_*.ipynb``, title from its first heading."""
    labs = {}
    for path in sorted(Path(labs_dir).glob("lab*_*.ipynb")):
        match = _LAB_NOTEBOOK.match(path.name)
        if match:
            labs[match.group(1)] = {"title": _notebook_title(path) or match.group(1), "notebook": path.stem}
    return labs


def _notebook_title(path: Path) -> str | None:
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, json.JSONDecodeError):
        return None
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def load_results(results_dir: Path) -> dict[str, dict]:
    """Every ``<results_dir>/<lab>.json`` (not its subfolders: ``ci/`` holds CI-profile runs)."""
    results = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        _validate(doc, path)
        if doc["lab"] != path.stem:
            raise ValueError(f"{path}: 'lab' is {doc['lab']!r} but the file is named for {path.stem!r}")
        results[doc["lab"]] = doc
    return results


def _validate(doc, path) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("lab"), str):
        raise ValueError(f"{path}: expected an object with a 'lab' name, 'run' and 'entries'")
    if doc.get("run", {}).get("profile", "full") != "full":
        raise ValueError(f"{path}: profile {doc['run']['profile']!r}; the results page shows only "
                         f"full-profile reference runs (CI runs belong in labs/results/ci/)")
    if doc["run"].get("edition", "course") != "course":
        raise ValueError(f"{path}: course edition {doc['run']['edition']!r}; the results page shows only the "
                         f"course's edition (other editions' runs belong in labs/results/<profile>-<edition>/)")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'entries' must be a list")
    for e in entries:
        for field in ("key", "value", "unit"):
            if field not in e:
                raise ValueError(f"{path}: entry {e!r} has no {field!r}")
        if not isinstance(e["value"], (int, float)) or isinstance(e["value"], bool):
            raise ValueError(f"{path}: entry {e['key']!r}: value must be a number, got {e['value']!r}")
        if e["unit"] == "acc" and not 0 <= e["value"] <= 1:
            raise ValueError(f"{path}: entry {e['key']!r}: unit 'acc' is a fraction in [0, 1], "
                             f"got {e['value']!r}")


def load_reference(path: Path = REFERENCE) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- formatting -----------------------------------------------------------------------------------

def format_value(value: float, unit: str, std: float | None = None, n: int = 1) -> str:
    """An entry as the page shows it: ``'91.64 %'``, ``'87.90 ± 0.41 % (3 seeds)'``, ``'12.5 x'``."""
    spread = std is not None and not (isinstance(std, float) and math.isnan(std))
    seeds = f" ({n} seeds)" if n > 1 else ""
    if unit == "acc":
        if spread:
            return f"{100 * value:.2f} ± {100 * std:.2f} %{seeds}"
        return f"{100 * value:.2f} %{seeds}"
    number = _number(value)
    if spread:
        number = f"{number} ± {_number(std)}"
    return f"{number} {unit}{seeds}".replace("  ", " ").strip()


def _number(v: float) -> str:
    if float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}".replace(",", "\u202f")          # 123 456 with narrow spaces
    return f"{v:.4g}"


def _cell(text) -> str:
    """Text safe inside a Markdown table cell."""
    return re.sub(r"([|*_`\\])", r"\\\1", str(text))


def _se(n: int, p: float = 0.9) -> float:
    """Binomial standard error of an accuracy p on n images, in points."""
    return 100 * math.sqrt(p * (1 - p) / n)


def _run_lines(run: dict) -> list[str]:
    lines = []
    when = run.get("date", "unknown date")
    took = f", took {run['minutes']} min" if run.get("minutes") is not None else ""
    lines.append(f"- **run**: {when}, {run.get('profile', 'full')} profile{took}")
    device = run.get("device", "unknown")
    if run.get("torch"):
        device += f"; torch {run['torch']}"
    lines.append(f"- **device**: {device}")
    if run.get("precision"):
        lines.append(f"- **precision**: {run['precision']}")
    if run.get("train_images") is not None:
        n_test = run.get("test_images")
        data = f"CIFAR-10, {run['train_images']} training / {n_test} test images"
        if run.get("val_images"):
            data = (f"CIFAR-10, {run['train_images']} training / {run['val_images'] + n_test} test images "
                    f"({run['val_images']} validate, {n_test} report)")
        lines.append(f"- **data**: {data}")
        if run.get("selection"):
            lines.append(f"- **selection**: {run['selection']}")
        n_val = run.get("val_images") or 0
        if n_test and n_val:
            n_all = n_test + n_val
            lines.append(f"- **noise**: results that choose nothing use all {n_all} test images (one image "
                         f"{100 / n_all:.2f} points, a binomial standard error of {_se(n_all):.1f} points near "
                         f"90 %); fine-tuned results are reported on {n_test} of them (one image "
                         f"{100 / n_test:.2f} points, standard error {_se(n_test):.1f} points)")
        elif n_test:
            lines.append(f"- **noise**: one test image is {100 / n_test:.2f} points; the binomial standard "
                         f"error of an accuracy near 90 % on {n_test} images is {_se(n_test):.1f} points")
    if run.get("seeds"):
        lines.append(f"- **seeds**: {', '.join(str(s) for s in run['seeds'])}")
    return lines


# --- the page -------------------------------------------------------------------------------------

def render(labs: dict[str, dict], results: dict[str, dict], reference: dict, *, toc: str = "") -> str:
    """The Markdown of the results page. ``toc``: the text of _toc.yml, to link only to built pages."""
    ref_labs, ref_labels, ref_notes = reference["labs"], reference.get("labels", {}), reference.get("notes", {})
    ref_header = f"reference solution, {reference['data'].split(' (')[0]}"
    out = [
        "<!-- Written by scripts/make_results.py from labs/results/*.json: do not edit by hand. -->",
        "(results)=",
        "# Results",
        "",
        "Every figure the labs report, as their reference runs recorded it: each notebook saves its",
        "numbers to `labs/results/<lab>.json` when it runs with the full profile, and `make book`",
        "regenerates this page from those files.",
        "",
        f"The right-hand column holds the numbers of {reference['source']}, on {reference['data']}.",
        "They come from other data and another checkpoint: they show what the same assignment gives",
        "at full scale, not what our runs should match.",
        "",
    ]
    for lab in sorted(set(labs) | set(results), key=_lab_order):
        info = labs.get(lab, {})
        doc = results.get(lab)
        title = (doc or {}).get("title") if doc and doc.get("title") not in (None, lab) else None
        title = title or info.get("title") or lab
        out += [f"## {title}", ""]
        notebook = info.get("notebook")
        if notebook and f"labs/{notebook}" in toc:
            out += [f"The notebook: {{doc}}`../labs/{notebook}`.", ""]
        refs = ref_labs.get(lab, {})
        notes = []
        if doc is None:
            out += [f"Not yet run: `labs/results/{lab}.json` does not exist yet (`make reference` "
                    f"writes it).", ""]
            if refs:
                out += ["| result | ours | " + ref_header + " |", "| --- | --- | --- |"]
                for key, ref in refs.items():
                    out.append(f"| {_cell(ref_labels.get(key, key))} | — | {ref:.2f} %"
                               f"{_note_mark(key, ref_notes, notes)} |")
                out.append("")
            out += _footnotes(notes)
            continue
        out += _run_lines(doc.get("run", {})) + _gap_lines(doc["entries"], has_reference=bool(refs)) + [""]
        has_refs = bool(refs)
        header = "| part | result | ours |" + (f" {ref_header} |" if has_refs else "")
        out += [header, "| --- | --- | --- |" + (" --- |" if has_refs else "")]
        seen = set()
        for e in doc["entries"]:
            seen.add(e["key"])
            ours = format_value(e["value"], e["unit"], e.get("std"), e.get("n", 1))
            row = f"| {_cell(e.get('part', ''))} | {_cell(e.get('label') or e['key'])} | {_cell(ours)} |"
            if has_refs:
                ref = refs.get(e["key"])
                row += (f" {ref:.2f} %{_note_mark(e['key'], ref_notes, notes)} |" if ref is not None else " |")
            out.append(row)
        for key, ref in refs.items():                    # reference numbers this run did not record
            if key not in seen:
                out.append(f"|  | {_cell(ref_labels.get(key, key))} | not measured | {ref:.2f} %"
                           f"{_note_mark(key, ref_notes, notes)} |")
        out.append("")
        out += _footnotes(notes)
    return "\n".join(out).rstrip() + "\n"


def _gap_lines(entries, *, has_reference: bool) -> list[str]:
    """Why fine-tuned numbers sit below the reference's: the step counts the run recorded."""
    steps = {e["key"]: e["value"] for e in entries if e["key"] in ("sgd_steps", "sgd_steps_full")}
    if len(steps) < 2 or not has_reference:
        return []
    ours, full = steps["sgd_steps"], steps["sgd_steps_full"]
    return [f"- **gap to the reference**: one fine-tuning run here is {_number(ours)} SGD steps; the same "
            f"epochs on full CIFAR-10 are {_number(full)} steps, {full / ours:.1f} times as many, so the "
            f"reference's fine-tuned numbers had far more training. Its evaluation-only numbers (pretrained, "
            f"one-shot pruning, post-training quantization) differ because its checkpoint is another one"]


def _note_mark(key, ref_notes, notes) -> str:
    if key not in ref_notes:
        return ""
    if ref_notes[key] not in notes:
        notes.append(ref_notes[key])
    return " " + "†" * (notes.index(ref_notes[key]) + 1)


def _footnotes(notes) -> list[str]:
    return ["†" * (i + 1) + f" {note}." for i, note in enumerate(notes)] + ([""] if notes else [])


def _lab_order(lab: str):
    digits = re.sub(r"\D", "", lab)
    return (int(digits) if digits else math.inf, lab)


def build_page(repo: Path = REPO) -> str:
    toc = (repo / "_toc.yml").read_text(encoding="utf-8") if (repo / "_toc.yml").is_file() else ""
    return render(discover_labs(repo / "labs"), load_results(repo / "labs" / "results"),
                  load_reference(), toc=toc)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that book/results.md is current")
    args = parser.parse_args(argv)
    page = build_page()
    current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else None
    if args.check:
        if current != page:
            print(f"{PAGE.relative_to(REPO)} is out of date: run `make results` (or "
                  f"python scripts/make_results.py) and commit it", file=sys.stderr)
            return 1
        return 0
    if current != page:
        PAGE.write_text(page, encoding="utf-8")
        print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
