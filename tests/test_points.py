"""Point files: CSV in RAS or LPS, 3D Slicer markups, and clear refusals."""

import json

import numpy as np
import pytest

from napari_labelreg.core.io import DataError
from napari_labelreg.core.points import read_points, refusal, write_points


def test_csv_columns_in_ras_or_lps_read_as_the_same_points(tmp_path):
    (tmp_path / "ras.csv").write_text("label,x,y,z\nlesion,1.5,-2,30\nbase,4,5,6\n")
    (tmp_path / "lps.csv").write_text("name,L,P,S\nlesion,-1.5,2,30\nbase,-4,-5,6\n")
    labels, ras = read_points(tmp_path / "ras.csv")
    named, lps = read_points(tmp_path / "lps.csv")
    assert labels == named == ["lesion", "base"]
    np.testing.assert_allclose(ras, [[1.5, -2, 30], [4, 5, 6]])
    np.testing.assert_allclose(lps, ras)


def test_markups_round_trip_in_lps_and_skip_unplaced_points(tmp_path):
    points = np.array([[1.0, 2.0, 3.0], [-4.0, 5.5, 6.0]])
    write_points(tmp_path / "out.mrk.json", ["a", "b"], points, residual_mm=[1e-6, 2e-6])
    doc = json.loads((tmp_path / "out.mrk.json").read_text())
    markup = doc["markups"][0]
    assert markup["coordinateSystem"] == "LPS" and markup["controlPoints"][0]["position"] == [-1.0, -2.0, 3.0]
    assert markup["controlPoints"][1]["description"] == "residual_mm 2e-06"
    markup["controlPoints"].append({"label": "unplaced", "position": [0, 0, 0], "positionStatus": "undefined"})
    (tmp_path / "out.mrk.json").write_text(json.dumps(doc))
    notes = []
    labels, back = read_points(tmp_path / "out.mrk.json", notes)
    assert labels == ["a", "b"]
    assert notes == [f"{tmp_path / 'out.mrk.json'}: 1 point not placed in Slicer, left out: 'unplaced'"]
    np.testing.assert_allclose(back, points)


@pytest.mark.parametrize("text,words", [
    ("29,29,25\n", "expected a header line naming columns x,y,z (RAS mm), r,a,s or l,p,s (LPS mm), then one point "
                   "per line; its first line reads 29,29,25"),
    ("", "the file is empty"),
    ("x,y,z\n", "no points"),
    ("x,y,z\n1,nan,3\n", "NaN or infinite"),
    ("x,y,z\n1,two,3\n", "cannot read points"),
])
def test_a_bad_csv_is_refused_in_one_line_naming_it(tmp_path, text, words):
    path = tmp_path / "targets.csv"
    path.write_text(text)
    with pytest.raises(DataError) as refused:
        read_points(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


def test_a_refusal_names_the_points_by_label_and_place():
    message = refusal("t.csv", ["a", "b", "c"], [2], "outside the fixed image")
    assert message == "t.csv: 'c' (point 3): outside the fixed image; nothing written"
