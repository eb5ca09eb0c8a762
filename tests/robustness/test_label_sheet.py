"""A hand-edited NATIVE label sheet: every mistake is an error naming the file, row and column."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from dataset.base import DataError
from dataset.native import read_label_sheet
from tests.robustness._helpers import load, make_native, native_overrides, tiny_yaml, write_sheet

HEADER = ["ID", "Hat", "Bag", "Quality"]


def _read(tmp_path, rows, header=HEADER):
    return read_label_sheet(write_sheet(tmp_path / "labels.xlsx", header, rows))


def _error(tmp_path, rows, header=HEADER) -> str:
    with pytest.raises(DataError) as e:
        _read(tmp_path, rows, header)
    assert str(tmp_path / "labels.xlsx") in str(e.value)
    return str(e.value)


def test_missing_id_column(tmp_path):
    msg = _error(tmp_path, [["c1_v1_1_1", 1, 0, "high"]], header=["Name", "Hat", "Bag", "Quality"])
    assert "no 'ID' column in the header row" in msg and "'Name'" in msg


def test_duplicate_id_names_both_rows(tmp_path):
    msg = _error(tmp_path, [["a_1", 1, 0, "high"], ["b_1", 0, 0, "high"], ["a_1", 0, 1, "low"]])
    assert "duplicate ID 'a_1' in rows 2 and 4" in msg


def test_empty_id_names_the_row(tmp_path):
    msg = _error(tmp_path, [["a_1", 1, 0, "high"], [None, 1, 1, "high"]])
    assert "row 3 has an empty 'ID'" in msg


@pytest.mark.parametrize("value", [2, "x", 0.5, -1, "yes"])
def test_value_other_than_blank_0_1_names_row_and_column(tmp_path, value):
    msg = _error(tmp_path, [["a_1", 1, 0, "high"], ["a_2", 0, value, "high"]])
    assert f"row 3, column 'Bag' holds {value!r}; labels must be blank, 0 or 1" in msg


def test_blank_and_stray_whitespace_read_as_0_with_a_warning_count(tmp_path, caplog):
    rows = [["a_1", " ", None, "high"], ["a_2", "1", "  ", "high"], [" a_3 ", " 1 ", 1.0, "high"],
            [None, None, None, None]]  # a trailing empty row is ignored
    with caplog.at_level(logging.WARNING):
        ids, attrs, labels, quality = _read(tmp_path, rows)
    assert ids == ["a_1", "a_2", "a_3"] and attrs == ["Hat", "Bag"]
    assert labels.tolist() == [[0, 0], [1, 0], [1, 1]]
    assert "2 label cell(s) held only whitespace; read as 0" in caplog.text


def test_attribute_column_named_in_attrs_but_missing_from_the_sheet(tmp_path, synth_root):
    from dataset import build_data

    sheet, images, _ = make_native(tmp_path / "native", n_tubes=4)
    cfg = load(tiny_yaml(tmp_path, synth_root, **native_overrides(sheet, images),
                         **{"DATASET.ATTRS": ["Hat", "Backpack"]}))
    with pytest.raises(DataError) as e:
        build_data(cfg)
    msg = str(e.value)
    assert str(sheet) in msg and "DATASET.ATTRS names column(s) ['Backpack']" in msg and "Hat, Bag, Female" in msg


def test_a_file_that_is_not_xlsx(tmp_path):
    bad = tmp_path / "labels.xlsx"
    bad.write_text("ID,Hat\na,1\n")  # a CSV saved under the xlsx name
    with pytest.raises(DataError, match=r"labels.xlsx is not a readable .xlsx file"):
        read_label_sheet(bad)


def test_a_clean_sheet_reads_exactly(tmp_path):
    ids, attrs, labels, quality = _read(tmp_path, [["a_1", 1, 0, "High"], ["a_2", 0, 1, None]])
    assert ids == ["a_1", "a_2"] and quality == ["high", ""]
    assert np.array_equal(labels, [[1, 0], [0, 1]])
