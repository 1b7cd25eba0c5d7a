"""The run header and footer, seeds tables, and the results file."""
from pathlib import Path

import pytest

from labkit import report, settings


def test_header_names_profile_and_device(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    clock = report.Clock()
    text = report.run_header(device="cpu")
    assert "profile 'ci'" in text and "device: cpu" in text
    seconds = float(report.run_footer(clock).split("(")[1].split(" s)")[0])
    assert 0 <= seconds < 60


def test_footer_without_clock_says_so():
    assert "unknown" in report.run_footer(None)


def test_header_starts_no_clock_and_the_footer_times_the_clock_it_is_given(monkeypatch):
    import time

    monkeypatch.setenv("LABKIT_PROFILE", "full")
    early = report.Clock()
    time.sleep(1.1)
    late = report.Clock()
    report.run_header(device="cpu")                 # formats only: it restarts neither clock
    assert "(1 s)" in report.run_footer(early) and "(0 s)" in report.run_footer(late)
    text = report.run_header(device="cpu", profile=settings.PROFILES["ci"])   # given, not read
    assert "profile 'ci'" in text


def tiny_cifar(n_test=20):
    import torch

    from labkit.data import CIFAR10, Split

    def split(n):
        return Split(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.arange(n) % 2)
    return CIFAR10(split(30), split(n_test), ["a", "b"])


def test_header_states_precision_of_a_config_and_the_protocol_of_the_data():
    from labkit.data import validation_from_test
    from labkit.train import TrainConfig

    text = report.run_header(device="cpu", config=TrainConfig(precision="fp32", memory_format="contiguous"))
    assert "training: fp32, contiguous (precision='fp32'); evaluation: fp32" in text
    assert "validation" not in text                      # the config holds no validation: the data does
    tuned = validation_from_test(tiny_cifar(21))
    text = report.run_header(tuned, device="cpu")
    assert "data: CIFAR-10, 30 train / 11 validation / 10 test images" in text
    assert ("selection: validation: 11 of the 21 test images (class-balanced, seed 0) choose the epoch; "
            "reported on the other 10") in text
    text = report.run_header(tiny_cifar(21), device="cpu")
    assert "data: CIFAR-10, 30 train / 21 test images" in text
    assert "selection: no validation images: no epoch is selected, the last one is reported" in text


def test_results_state_the_protocol_of_the_data(tmp_path):
    import json

    from labkit.data import validation_from_test
    from labkit.train import TrainConfig

    tuned = validation_from_test(tiny_cifar(21))
    r = report.Results("lab9", tuned, "cpu", TrainConfig(precision="fp32"), profile=settings.PROFILES["full"])
    run = json.loads(r.save(tmp_path).read_text())["run"]
    assert (run["train_images"], run["val_images"], run["test_images"]) == (30, 11, 10)
    assert run["selection"] == tuned.protocol() and "val_fraction" not in run


def test_results_are_saved_per_profile_and_never_twice_per_key(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("LABKIT_PROFILE", "full")
    r = report.Results("lab9", device="cpu", seeds=[0, 1])
    r.add("fp", 0.9164, part="(a)", label="pretrained")
    r.add("size", 1234, unit="bytes")
    with pytest.raises(ValueError, match="'fp' was added already"):
        r.add("fp", 0.5)
    doc = json.loads(r.save(tmp_path).read_text())
    assert doc["lab"] == "lab9" and doc["run"]["profile"] == "full" and doc["run"]["seeds"] == [0, 1]
    assert doc["entries"][0] == {"key": "fp", "part": "(a)", "label": "pretrained", "value": 0.9164,
                                 "std": None, "n": 1, "unit": "acc"}
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    assert report.Results("lab9").save(tmp_path) == tmp_path / "ci" / "lab9.json"


def test_results_keep_the_profile_they_were_made_with(tmp_path, monkeypatch):
    """The profile is read once, when the Results is made: changing the variable later does not move
    where it is saved."""
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    r = report.Results("lab9")
    monkeypatch.setenv("LABKIT_PROFILE", "full")
    assert r.save(tmp_path) == tmp_path / "ci" / "lab9.json"
    assert report.Results("lab9", profile=settings.PROFILES["ci"]).path(tmp_path) == tmp_path / "ci" / "lab9.json"
    with pytest.raises(ValueError, match="Profile"):
        report.Results("lab9", profile="ci")


def test_seeds_table_summarises_each_method_over_its_seeds():
    from labkit.train import History

    def run(val, test):
        return History([{"epoch": i + 1, "val_acc": v, "test_acc": t} for i, (v, t) in enumerate(zip(val, test))])

    runs = {"a": [run([0.5, 0.9], [0.80, 0.70]), run([0.9, 0.5], [0.60, 0.90])]}
    text = report.seeds_table(runs)
    row = text.splitlines()[2]
    # selected on validation: 0.70 and 0.60; course protocol: 0.80 and 0.90; final: 0.70 and 0.90
    assert "65.00 ± 7.07 %" in row and "85.00 ± 7.07 %" in row and "80.00 ± 14.14 %" in row
    header = text.splitlines()[0]
    assert "validation-selected epoch" in header and "course protocol (best test epoch, optimistic)" in header


def test_seeds_table_says_when_nothing_was_selected_and_how_each_row_was_reported():
    from labkit.train import History

    def run(val, test):
        return History([{"epoch": i + 1, "val_acc": v, "test_acc": t} for i, (v, t) in enumerate(zip(val, test))])

    last = {"a": [run([None, None], [0.80, 0.70]), run([None, None], [0.60, 0.90])]}
    text = report.seeds_table(last)
    assert "last epoch (no selection)" in text.splitlines()[0] and "validation" not in text
    assert "80.00 ± 14.14 %" in text.splitlines()[2]          # reported: the last epochs, 0.70 and 0.90
    mixed = dict(last, b=[run([0.5, 0.9], [0.80, 0.70])])
    lines = report.seeds_table(mixed).splitlines()
    assert "reported epoch" in lines[0]
    assert "last epoch (no selection)" in lines[2] and "validation-selected epoch" in lines[3]


def test_results_table_lists_the_entries_of_a_part_with_their_spread():
    r = report.Results("lab9", profile=settings.PROFILES["full"])
    r.add("a", 0.9164, part="(a)", label="pretrained")
    r.add("c", 0.8721, std=0.0043, n=3, part="(c)", label="fine-tuned")
    r.add("size", 58932, unit="bytes", part="(c)", label="file")
    lines = r.table("(c)").splitlines()
    assert lines[0].split() == ["part", "result", "value", "spread"] and len(lines) == 4
    assert lines[2].split() == ["(c)", "fine-tuned", "87.21%", "±", "0.43%", "(3", "seeds)"]
    assert lines[3].split() == ["(c)", "file", "5.893e+04", "bytes"]
    assert len(r.table().splitlines()) == 5
    with pytest.raises(ValueError, match=r"no entry of part '\(x\)'; parts: \['\(a\)', '\(c\)'\]"):
        r.table("(x)")


def test_results_path_is_the_profile_folder():
    assert report.results_path("lab2", settings.PROFILES["full"], "r") == Path("r/lab2.json")
    assert report.results_path("lab2", settings.PROFILES["ci"], "r") == Path("r/ci/lab2.json")
    with pytest.raises(ValueError, match="settings.Profile"):
        report.results_path("lab2", "ci")


def test_results_path_keeps_each_edition_apart():
    full, ci = settings.PROFILES["full"], settings.PROFILES["ci"]
    assert report.results_path("lab2", full, "r", "course") == Path("r/lab2.json")
    assert report.results_path("lab2", full, "r", "2024") == Path("r/full-2024/lab2.json")
    assert report.results_path("lab2", ci, "r", "2024") == Path("r/ci-2024/lab2.json")
    r = report.Results("lab9", profile=ci, edition="2024")
    assert r.path("r") == Path("r/ci-2024/lab9.json") and r.run["edition"] == "2024"
    for bad in ("", "../x", None):
        with pytest.raises(ValueError, match="edition"):
            report.Results("lab9", profile=ci, edition=bad)


def test_per_image_correctness_is_saved_and_read_back_exactly(tmp_path):
    import numpy as np
    from labkit import settings
    rng = np.random.default_rng(0)
    arr = rng.random((3, 509)) < 0.8
    res = report.Results("labx", profile=settings.PROFILES["ci"])
    res.add_correct("e", arr)
    res.add_correct("one", arr[0])
    res.save(tmp_path)
    back, run = report.load_correct("labx", "e", settings.PROFILES["ci"], folder=tmp_path)
    assert back.dtype == bool and np.array_equal(back, arr) and run["profile"] == "ci"
    assert np.array_equal(report.load_correct("labx", "one", settings.PROFILES["ci"], folder=tmp_path)[0], arr[:1])
    with pytest.raises(ValueError, match="added already"):
        res.add_correct("e", arr)
    with pytest.raises(ValueError, match="bool of shape"):
        res.add_correct("f", arr.astype(int))
    with pytest.raises(ValueError, match="no per-image correctness 'x'"):
        report.load_correct("labx", "x", settings.PROFILES["ci"], folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="run laby first"):
        report.load_correct("laby", "e", settings.PROFILES["ci"], folder=tmp_path)


def test_a_quick_run_falls_back_to_the_reference_runs_correctness_and_damage_is_named(tmp_path):
    import json
    import numpy as np
    from labkit import settings
    res = report.Results("labx", profile=settings.PROFILES["full"])
    res.add_correct("e", np.ones((2, 10), bool))
    path = res.save(tmp_path)
    assert report.load_correct("labx", "e", settings.PROFILES["ci"], folder=tmp_path)[0].shape == (2, 10)
    with pytest.raises(FileNotFoundError):
        report.load_correct("labx", "e", settings.PROFILES["ci"], folder=tmp_path, reference=False)
    doc = json.loads(path.read_text())
    doc["correct"]["e"]["shape"] = [3, 10]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="damaged"):
        report.load_correct("labx", "e", settings.PROFILES["full"], folder=tmp_path)
