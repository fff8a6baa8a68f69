from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.data.labels import load_table, parse_sex, read_labels, table_from_folder
from boneage.errors import BoneAgeError


def _folder(tmp_path: Path, ids, csv_text: str, name="labels.csv", sub=None) -> Path:
    img_dir = tmp_path / (sub or "img")
    img_dir.mkdir(parents=True, exist_ok=True)
    for i in ids:
        cv2.imwrite(str(img_dir / (i if "." in i else f"{i}.png")), np.zeros((8, 8), np.uint8))
    p = tmp_path / name
    p.write_text(csv_text)
    return p


def test_training_format(tmp_path):
    csv = _folder(tmp_path, ["1", "2"], "id,boneage,male\n1,120,True\n2,36.5,False\n")
    t = read_labels(csv, tmp_path / "img")
    assert t.ids == ["1", "2"]
    assert t.male.tolist() == [True, False]
    assert t.months.tolist() == [120.0, 36.5]
    assert t.records[0].path == tmp_path / "img" / "1.png"


def test_validation_format(tmp_path):
    csv = _folder(tmp_path, ["1386"], "Image ID,male,Bone Age (months)\n1386,FALSE,30\n")
    t = read_labels(csv, tmp_path / "img")
    assert (t.ids, t.male.tolist(), t.months.tolist()) == (["1386"], [False], [30.0])


def test_test_format_with_sex_letters(tmp_path):
    csv = _folder(tmp_path, ["4360", "4361"],
                  "Case ID,Sex,Ground truth bone age (months)\n4360,M,168.93\n4361,F,169.65\n")
    t = read_labels(csv, tmp_path / "img")
    assert t.male.tolist() == [True, False]
    assert t.months.tolist() == pytest.approx([168.93, 169.65])


@pytest.mark.parametrize("value,male", [("1", True), ("0", False), ("male", True),
                                        ("Female", False), ("m", True), ("F", False)])
def test_sex_values(value, male):
    assert parse_sex(value) is male


def test_string_ids_and_jpeg(tmp_path):
    csv = _folder(tmp_path, ["patient A.jpg", "b-7.jpg"],
                  "id,boneage,male\npatient A,10,1\nb-7.jpg,20,0\n")
    t = read_labels(csv, tmp_path / "img")
    assert [r.path.name for r in t] == ["patient A.jpg", "b-7.jpg"]


def test_kaggle_layout(tmp_path):
    csv = _folder(tmp_path, ["5", "6"], "id,boneage,male\n5,1,True\n6,2,False\n",
                  name="boneage-training-dataset.csv", sub="boneage-training-dataset")
    t = read_labels(csv)  # no images folder given: found beside the CSV
    assert [r.path.parent.name for r in t] == ["boneage-training-dataset"] * 2


@pytest.mark.parametrize(
    "text,words",
    [
        ("id,boneage,male\n1,12,True\n1,13,True\n", ["duplicate id", "row 3"]),
        ("id,boneage,male\n1,abc,True\n", ["'boneage'", "not a number", "row 2", "'abc'"]),
        ("id,boneage,male\n1,300,True\n", ["outside 0-240", "'300'"]),
        ("id,boneage,male\n1,-2,True\n", ["outside 0-240"]),
        ("id,boneage,male\n1,12,X\n", ["'male'", "unknown sex", "'X'"]),
        ("id,boneage,male\n9,12,True\n", ["missing image", "'9'"]),
        ("id,age_in_years\n1,12\n", ["missing column", "sex", "found id, age_in_years"]),
    ],
)
def test_validation_errors_name_file_column_rows(tmp_path, text, words):
    csv = _folder(tmp_path, ["1"], text)
    with pytest.raises(BoneAgeError) as e:
        read_labels(csv, tmp_path / "img")
    msg = str(e.value)
    assert msg.startswith("labels.csv:")
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_first_few_offending_rows_only(tmp_path):
    rows = "".join(f"{i},bad,True\n" for i in range(10))
    csv = _folder(tmp_path, [str(i) for i in range(10)], "id,boneage,male\n" + rows)
    msg = str(pytest.raises(BoneAgeError, read_labels, csv, tmp_path / "img").value)
    assert "10 row(s)" in msg and "and 7 more" in msg


def test_skip_invalid_drops_and_counts(tmp_path):
    csv = _folder(tmp_path, ["1", "2", "3"],
                  "id,boneage,male\n1,12,True\n2,999,True\n3,5,?\n4,5,True\n")
    t = read_labels(csv, tmp_path / "img", skip_invalid=True)
    assert t.ids == ["1"]
    assert t.dropped == 3
    assert "dropped 3" in t.notes[0]


def test_missing_file_and_empty(tmp_path):
    with pytest.raises(BoneAgeError, match="no such labels file"):
        read_labels(tmp_path / "nope.csv")
    csv = _folder(tmp_path, [], "id,boneage,male\n")
    with pytest.raises(BoneAgeError, match="no rows"):
        read_labels(csv, tmp_path / "img")


def test_folder_without_labels(tmp_path):
    _folder(tmp_path, ["a", "b"], "")
    (tmp_path / "img" / "notes.txt").write_text("x")
    t = table_from_folder(tmp_path / "img")
    assert t.ids == ["a", "b"] and not t.labelled
    with pytest.raises(BoneAgeError):
        load_table(None, None)


def test_an_age_column_under_another_name_is_said_not_dropped_silently(tmp_path):
    # a clinic's sheet: sex and "age_months" (bone or chronological age? it does not say)
    csv = _folder(tmp_path, ["f3"],
                  "file,age_months,male,PatientAge,image_path\nf3,37.2,False,3,x\n")
    t = read_labels(csv, require_age=False, require_images=False)
    assert t.records[0].chronological_months is None and t.records[0].months is None
    (note,) = t.notes
    assert "'age_months', 'PatientAge' not read" in note and "chronological_age_months" in note
    # a bare "age" beside sex: for predict (no bone age needed) likely the child's own age
    csv.write_text("file,age,male\nf3,37.2,False\n")
    t = read_labels(csv, require_age=False, require_images=False)
    assert t.records[0].chronological_months is None and "'age' not read" in t.notes[0]
    csv.write_text("file,chronological_age_months,male\nf3,37.2,False\n")
    t = read_labels(csv, require_age=False, require_images=False)
    assert t.records[0].chronological_months == 37.2 and t.notes == []
