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
