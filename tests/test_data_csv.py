"""CSV tables as a SOURCE: numeric columns, labels, class selection, and errors that name the cell."""

from __future__ import annotations

import numpy as np
import pytest

from ood_flow.data import load_source
from ood_flow.errors import InputError


def write_csv(path, text):
    path.write_text(text)
    return path


def test_csv_numeric_and_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", "a,b,c\n1,2,3\n4,5,6\n7,8,9\n")
    ds = load_source(str(path))
    assert ds.kind == "vector" and ds.x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and ds.labels is None
    assert load_source(str(path), columns=["c", "a"]).x.tolist() == [[3, 1], [6, 4], [9, 7]]
    assert load_source(str(path), limit=2).x.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_csv_string_labels_and_class_selection(tmp_path):
    path = write_csv(tmp_path / "t.csv", "x,kind,y\n1,dog,2\n3,cat,4\n5,dog,6\n7,eel,8\n")
    ds = load_source(str(path), label_column="kind")
    assert ds.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert ds.label_names == ["cat", "dog", "eel"] and ds.labels.tolist() == [1, 0, 1, 2]
    dogs = load_source(str(path), label_column="kind", class_value="dog")
    assert dogs.x.tolist() == [[1, 2], [5, 6]] and dogs.ids.tolist() == ["0", "2"]
    assert load_source(str(path), label_column="kind", class_value="dog", limit=1).ids.tolist() == ["0"]
    with pytest.raises(InputError, match="no sample has label"):
        load_source(str(path), label_column="kind", class_value="3")


def test_csv_numeric_labels(tmp_path):
    path = write_csv(tmp_path / "t.csv", "label,f\n1,0.5\n0,1.5\n1,2.5\n")
    ds = load_source(str(path), label_column="label", class_value="1")
    assert ds.labels.tolist() == [1, 1] and ds.label_names is None and ds.x.tolist() == [[0.5], [2.5]]


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n3,nan\n", r"row 2 \(line 3\), column 'b' is nan"),
    ("a,b\n1,inf\n", r"row 1 \(line 2\), column 'b' is inf"),
    ("a,b\n1,2\n3,x7\n", r"row 2 \(line 3\), column 'b': 'x7' is not a number"),
    ("a,b\n1,2\n3\n", "line 3 has 1 fields but the header has 2"),
    ("a,b\n", "holds no samples"),
])
def test_csv_errors_name_file_row_and_column(tmp_path, text, message):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(InputError, match=r"bad\.csv.*" + message):
        load_source(str(path))


def test_csv_unknown_column_lists_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(InputError, match="no column 'z'; columns: a, b"):
        load_source(str(path), columns=["z"])


def test_table_options_only_for_csv(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 2)))
    with pytest.raises(InputError, match="apply to CSV sources only"):
        load_source(str(tmp_path / "f.npy"), columns=["a"])
