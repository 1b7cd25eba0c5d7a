"""scripts/make_results.py: the results page comes from the runs' JSON files, never typed.

The fixture is a small results folder written here; the page's lines are checked against the
numbers put into it (formatted by hand), and the committed book/results.md against the script.
"""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mr():
    spec = importlib.util.spec_from_file_location("make_results", REPO / "scripts" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN = {"date": "2026-11-25 22:10 UTC", "profile": "full", "device": "cpu (x86_64, 2 threads)",
       "precision": "bf16 autocast, channels_last", "train_images": 5085, "test_images": 1017,
       "torch": "2.13.0", "seeds": [0, 1, 2], "minutes": 18.3}


def entry(key, value, *, std=None, n=1, unit="acc", part="(a)", label=""):
    return {"key": key, "part": part, "label": label or key, "value": value, "std": std, "n": n, "unit": unit}


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    (folder / "ci").mkdir(parents=True)
    lab2 = {"lab": "lab2", "title": "Lab 2: pruning", "run": RUN, "entries": [
        entry("fp", 0.9164, label="pretrained model"),
        entry("finetune_c", 0.8721, std=0.0043, n=3, part="(c)", label="one-shot + fine-tuning"),
        entry("size", 1234567, unit="bytes", part="(x)", label="size | on disk"),
        entry("speed", 1.5, unit="x", part="(y)", label="speed-up"),
    ]}
    (folder / "lab2.json").write_text(json.dumps(lab2))
    # a CI-profile run: must never reach the page
    ci = dict(lab2, run=dict(RUN, profile="ci"), entries=[entry("fp", 0.5, label="CI run")])
    (folder / "ci" / "lab2.json").write_text(json.dumps(ci))
    return folder


@pytest.fixture
def reference():
    return {"source": "a reference solution", "data": "full CIFAR-10 (50 000 / 10 000)",
            "labs": {"lab2": {"fp": 91.51, "global_e": 88.68}, "lab3": {"ptq_4": 89.72}},
            "labels": {"global_e": "iterative global pruning", "ptq_4": "PTQ, 4 bits"}}


def page_lines(mr, results_dir, reference, labs=None):
    labs = labs if labs is not None else {"lab1": {"title": "Lab 1: sparse", "notebook": "lab1_x"},
                                          "lab2": {"title": "Lab 2 (notebook title)", "notebook": "lab2_y"},
                                          "lab3": {"title": "Lab 3: quantization", "notebook": "lab3_z"}}
    return mr.render(labs, mr.load_results(results_dir), reference, toc="labs/lab2_y").splitlines()


def test_a_recorded_lab_gets_every_entry_with_the_reference_beside_it(mr, results_dir, reference):
    lines = page_lines(mr, results_dir, reference)
    assert "## Lab 2: pruning" in lines                           # the JSON's title wins
    assert "| (a) | pretrained model | 91.64 % | 91.51 % |" in lines
    assert "| (c) | one-shot + fine-tuning | 87.21 ± 0.43 % (3 seeds) | |" in lines
    assert "| (x) | size \\| on disk | 1\u202f234\u202f567 bytes | |" in lines
    assert "| (y) | speed-up | 1.5 x | |" in lines
    assert "|  | iterative global pruning | not measured | 88.68 % |" in lines   # reference only
    assert "The notebook: {doc}`../labs/lab2_y`." in lines                        # listed in the toc
    text = "\n".join(lines)
    assert "CI run" not in text and "50.00 %" not in text
    for fact in ["2026-11-25 22:10 UTC, full profile, took 18.3 min", "cpu (x86_64, 2 threads); torch 2.13.0",
                 "bf16 autocast, channels_last", "5085 training / 1017 test images", "0, 1, 2"]:
        assert fact in text, fact


def test_the_noise_line_is_the_binomial_standard_error(mr, results_dir, reference):
    line = next(l for l in page_lines(mr, results_dir, reference) if l.startswith("- **noise**"))
    assert "one test image is 0.10 points" in line
    assert "is 0.9 points" in line                                   # 100 sqrt(0.9 * 0.1 / 1017) = 0.94


def test_labs_without_results_say_not_yet_run(mr, results_dir, reference):
    lines = page_lines(mr, results_dir, reference)
    text = "\n".join(lines)
    assert text.count("Not yet run") == 2                            # lab1 and lab3
    assert "| PTQ, 4 bits | — | 89.72 % |" in lines                    # lab3's reference numbers
    assert "{doc}`../labs/lab1_x`" not in text                       # not in the toc: no link
    assert [l for l in lines if l.startswith("## ")] == ["## Lab 1: sparse", "## Lab 2: pruning",
                                                         "## Lab 3: quantization"]


def test_no_results_at_all(mr, tmp_path, reference):
    page = mr.render({}, mr.load_results(tmp_path), reference)
    assert page.startswith("<!--") and "# Results" in page


@pytest.mark.parametrize("bad, message", [
    ({"lab": "lab2", "run": RUN, "entries": [entry("fp", 91.6)]}, "unit 'acc' is a fraction"),
    ({"lab": "lab2", "run": RUN, "entries": [{"key": "fp", "value": 0.9}]}, "has no 'unit'"),
    ({"lab": "lab2", "run": dict(RUN, profile="ci"), "entries": []}, "profile 'ci'"),
    ({"lab": "lab2", "run": dict(RUN, edition="2024"), "entries": []}, "course edition '2024'"),
    ({"lab": "lab9", "run": RUN, "entries": []}, "named for 'lab2'"),
    ({"lab": "lab2", "run": RUN, "entries": [entry("fp", "high")]}, "value must be a number"),
])
def test_bad_results_files_are_refused_with_the_reason(mr, tmp_path, bad, message):
    (tmp_path / "lab2.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=message):
        mr.load_results(tmp_path)


def test_lab_titles_come_from_the_notebooks(mr):
    labs = mr.discover_labs(REPO / "labs")
    assert "lab1" in labs and labs["lab1"]["notebook"] == "lab1_sparse_optimization"
    assert labs["lab1"]["title"].startswith("Lab 1")


def test_committed_page_is_what_the_generator_writes(mr):
    committed = (REPO / "book" / "results.md").read_text(encoding="utf-8")
    assert committed == mr.build_page(REPO), (
        "book/results.md is out of date: run `make results` (python scripts/make_results.py) and commit it")


def test_reference_notes_become_footnotes(mr, results_dir, reference):
    reference["notes"] = {"fp": "another checkpoint", "global_e": "another checkpoint",
                          "ptq_4": "a different note"}
    lines = page_lines(mr, results_dir, reference)
    assert "| (a) | pretrained model | 91.64 % | 91.51 % † |" in lines
    assert "|  | iterative global pruning | not measured | 88.68 % † |" in lines   # same note, same mark
    assert lines.count("† another checkpoint.") == 1
    assert "| PTQ, 4 bits | — | 89.72 % † |" in lines and "† a different note." in lines  # per lab


def test_the_gap_to_the_reference_is_said_with_the_recorded_step_counts(mr, results_dir, reference):
    doc = json.loads((results_dir / "lab2.json").read_text())
    doc["entries"] += [entry("sgd_steps", 400, unit="steps"), entry("sgd_steps_full", 3920, unit="steps")]
    (results_dir / "lab2.json").write_text(json.dumps(doc))
    gap = [l for l in page_lines(mr, results_dir, reference) if l.startswith("- **gap to the reference**")]
    assert len(gap) == 1
    assert "400 SGD steps" in gap[0] and "3\u202f920 steps, 9.8 times as many" in gap[0]
    reference["labs"].pop("lab2")           # nothing to compare with: no gap line
    assert not [l for l in page_lines(mr, results_dir, reference) if "gap to the reference" in l]


def test_the_noise_line_names_both_image_counts_when_half_the_test_images_validate(mr, results_dir, reference):
    doc = json.loads((results_dir / "lab2.json").read_text())
    doc["run"] = dict(RUN, test_images=509, val_images=508)
    (results_dir / "lab2.json").write_text(json.dumps(doc))
    line = next(l for l in page_lines(mr, results_dir, reference) if l.startswith("- **noise**"))
    assert "all 1017 test images (one image 0.10 points, a binomial standard error of 0.9 points" in line
    assert "reported on 509 of them (one image 0.20 points, standard error 1.3 points)" in line   # sqrt(.09/509)
    data = next(l for l in page_lines(mr, results_dir, reference) if l.startswith("- **data**"))
    assert data.endswith("5085 training / 1017 test images (508 validate, 509 report)")
