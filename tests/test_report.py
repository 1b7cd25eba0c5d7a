"""The run header and footer, seeds tables, and the results file."""
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


def test_header_states_precision_and_validation_of_a_config():
    from labkit.train import TrainConfig

    text = report.run_header(device="cpu", config=TrainConfig(precision="fp32", memory_format="contiguous"))
    assert "training: fp32, contiguous (precision='fp32'); evaluation: fp32; validation: 10%" in text


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
    row = report.seeds_table(runs).splitlines()[2]
    # selected on validation: 0.70 and 0.60; course protocol: 0.80 and 0.90; final: 0.70 and 0.90
    assert "65.00 ± 7.07 %" in row and "85.00 ± 7.07 %" in row and "80.00 ± 14.14 %" in row
