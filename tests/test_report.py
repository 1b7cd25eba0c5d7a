"""Text tables and the run header."""
import pytest

from labkit import report


def test_table_aligns_columns_and_formats_floats():
    text = report.table([["conv1", 0.5, 3], ["stage1.0.conv1", 0.25, 10]], ["layer", "sparsity", "n"],
                        floatfmt=".1%")
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "sparsity", "n"]
    assert lines[2].split() == ["conv1", "50.0%", "3"] and lines[3].split() == ["stage1.0.conv1", "25.0%", "10"]
    assert len({len(line) for line in lines[1:]}) == 1      # every row as wide as the rule
    assert lines[2].endswith(" 3") and lines[3].endswith("10")  # numbers align right


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="headers"):
        report.table([["a", 1.0, 2]], ["layer", "sparsity"])


def test_header_names_profile_and_device(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "ci")
    text = report.run_header(device="cpu")
    assert "profile 'ci'" in text and "device: cpu" in text
    seconds = float(report.run_footer().split("(")[1].split(" s)")[0])
    assert 0 <= seconds < 60


def test_footer_without_header_says_so(monkeypatch):
    monkeypatch.setattr(report, "_started", None)
    assert "unknown" in report.run_footer()


def test_header_states_precision_and_validation_of_a_config():
    from labkit.train import TrainConfig

    text = report.run_header(device="cpu", config=TrainConfig(precision="fp32", memory_format="contiguous"))
    assert "training: fp32, contiguous (precision='fp32'); evaluation: fp32; validation: 10%" in text


def test_binomial_standard_error_and_seed_statistics_against_hand_values():
    assert report.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert report.binomial_se(0.9164, 1017) == pytest.approx((0.9164 * 0.0836 / 1017) ** 0.5)
    mean, std = report.mean_std([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)     # sample std, n - 1
    assert report.pm([0.80, 0.82, 0.84]) == "82.00 ± 2.00 %"
    with pytest.raises(ValueError, match="n must be"):
        report.binomial_se(0.5, 0)


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


def test_difference_of_means_and_its_standard_error_by_hand():
    diff, se = report.difference([0.80, 0.82, 0.84], [0.70, 0.71, 0.72])
    assert diff == pytest.approx(0.11)
    assert se == pytest.approx(((0.02 ** 2) / 3 + (0.01 ** 2) / 3) ** 0.5)
    assert report.verdict(diff, se).startswith("beyond") and report.verdict(0.01, 0.01).startswith("within")
    # unequal seed counts: each variance is divided by its own count
    diff, se = report.difference([0.80, 0.84], [0.70, 0.71, 0.72, 0.73])
    assert diff == pytest.approx(0.82 - 0.715)
    s_a2, s_b2 = 0.0008, sum((v - 0.715) ** 2 for v in (0.70, 0.71, 0.72, 0.73)) / 3
    assert se == pytest.approx((s_a2 / 2 + s_b2 / 4) ** 0.5)
    with pytest.raises(ValueError, match="two seeds"):
        report.difference([0.8], [0.7, 0.71])


def test_seeds_table_summarises_each_method_over_its_seeds():
    from labkit.train import History

    def run(val, test):
        return History([{"epoch": i + 1, "val_acc": v, "test_acc": t} for i, (v, t) in enumerate(zip(val, test))])

    runs = {"a": [run([0.5, 0.9], [0.80, 0.70]), run([0.9, 0.5], [0.60, 0.90])]}
    row = report.seeds_table(runs).splitlines()[2]
    # selected on validation: 0.70 and 0.60; course protocol: 0.80 and 0.90; final: 0.70 and 0.90
    assert "65.00 ± 7.07 %" in row and "85.00 ± 7.07 %" in row and "80.00 ± 14.14 %" in row
