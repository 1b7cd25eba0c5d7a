"""labkit.tables: the plain-text table every labkit table is made with."""
import pytest

from labkit import tables


def test_table_aligns_columns_and_formats_floats():
    text = tables.table([["conv1", 0.5, 3], ["stage1.0.conv1", 0.25, 10]], ["layer", "sparsity", "n"],
                        floatfmt=".1%")
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "sparsity", "n"]
    assert lines[2].split() == ["conv1", "50.0%", "3"] and lines[3].split() == ["stage1.0.conv1", "25.0%", "10"]
    assert len({len(line) for line in lines[1:]}) == 1      # every row as wide as the rule
    assert lines[2].endswith(" 3") and lines[3].endswith("10")  # numbers align right


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="headers"):
        tables.table([["a", 1.0, 2]], ["layer", "sparsity"])
