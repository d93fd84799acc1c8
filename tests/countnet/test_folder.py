from __future__ import annotations

import pytest
from PIL import Image

from countnet.config import TrainConfig
from countnet.datasets import load_splits
from countnet.errors import DataError
from countnet.folder import load_carpk, load_labelled_folder, read_labels_csv
from tests.countnet.images import png_header


def _photo(path, size=(97, 53), colour=(10, 200, 30)) -> None:
    Image.new("RGB", size, colour).save(path)


def test_folder_of_any_size_is_resized(tmp_path) -> None:
    for i in range(20):
        _photo(tmp_path / f"p{i}.jpg", size=(40 + i, 90 - i))
    (tmp_path / "labels.csv").write_text("filename,count\n" + "".join(
        f"p{i}.jpg,{i}\n" for i in range(20)))
    tx, ty, vx, vy = load_labelled_folder(tmp_path, 32, 3, 0.3)
    assert tx.shape[1:] == (3, 32, 32) and vx.shape[1:] == (3, 32, 32)
    assert len(tx) + len(vx) == 20 and len(vx) > 0
    assert sorted(ty.tolist() + vy.tolist()) == [float(i) for i in range(20)]


def test_train_val_subfolders_via_config(tmp_path) -> None:
    for split, n in (("train", 6), ("val", 3)):
        (tmp_path / split).mkdir()
        for i in range(n):
            _photo(tmp_path / split / f"{i}.png")
        (tmp_path / split / "labels.csv").write_text("".join(f"{i}.png,{i}\n" for i in range(n)))
    cfg = TrainConfig(data="folder", data_dir=str(tmp_path), image_size=16)
    s = load_splits(cfg)
    assert s.train_x.shape == (6, 1, 16, 16) and s.val_y.tolist() == [0.0, 1.0, 2.0]


def test_carpk_layout_counts_boxes(tmp_path) -> None:
    for d in ("Images", "Annotations", "ImageSets"):
        (tmp_path / d).mkdir()
    names = {"train": ["a", "b"], "test": ["c"]}
    for split, items in names.items():
        (tmp_path / "ImageSets" / f"{split}.txt").write_text("\n".join(items) + "\n")
        for k, name in enumerate(items):
            _photo(tmp_path / "Images" / f"{name}.png", size=(120, 80))
            boxes = "".join(f"{j} {j} {j + 5} {j + 5} 1\n" for j in range(k + 2))
            (tmp_path / "Annotations" / f"{name}.txt").write_text(boxes)
    tx, ty, _, vy = load_carpk(tmp_path, 24, 3)
    assert ty.tolist() == [2.0, 3.0] and vy.tolist() == [2.0]
    assert tx.shape == (2, 3, 24, 24)


def test_malformed_row_names_file_and_row(tmp_path) -> None:
    (tmp_path / "labels.csv").write_text("filename,count\na.png,3\nb.png,many\n")
    with pytest.raises(DataError, match=r"labels\.csv:3: count 'many'"):
        read_labels_csv(tmp_path / "labels.csv")


def test_missing_and_undecodable_images_name_file_and_row(tmp_path) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        _photo(tmp_path / split / "ok.png")
    (tmp_path / "val" / "labels.csv").write_text("ok.png,1\n")
    (tmp_path / "train" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "train" / "labels.csv").write_text("ok.png,1\nbroken.png,1\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: .*broken\.png: cannot decode"):
        load_labelled_folder(tmp_path, 16, 1, 0.5)
    (tmp_path / "train" / "labels.csv").write_text("gone.png,1\n")
    with pytest.raises(DataError, match=r"labels\.csv:1: .*gone\.png: missing"):
        load_labelled_folder(tmp_path, 16, 1, 0.5)


def test_carpk_missing_annotation_is_named(tmp_path) -> None:
    for d in ("Images", "Annotations", "ImageSets"):
        (tmp_path / d).mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("a\n")
    _photo(tmp_path / "Images" / "a.png")
    with pytest.raises(DataError, match=r"train\.txt:1: annotation .*a\.txt is missing"):
        load_carpk(tmp_path, 16, 1)


# --- untrusted folders -----------------------------------------------------------------------
def _labels(tmp_path, text: str | bytes):
    path = tmp_path / "labels.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("count,reason", [
    ("1e39", "above the maximum of 100000"), ("100001", "above the maximum"),
    ("1e400", "not finite"), ("nan", "not finite"), ("-inf", "not finite"),
    ("-1", "negative"), ("2.5", "not a whole number"), ("", "not a number"),
])
def test_counts_are_whole_finite_and_capped(tmp_path, count, reason) -> None:
    path = _labels(tmp_path, f"filename,count\na.png,1\nb.png,{count}\n")
    with pytest.raises(DataError, match=rf"labels\.csv:3: count .* {reason}"):
        read_labels_csv(path)


def test_whole_counts_in_any_spelling_and_a_bom_are_accepted(tmp_path) -> None:
    path = _labels(tmp_path, "\ufefffilename,count\na.png,3.0\nb.png,1e2\nc.png,100000\n")
    assert [r.count for r in read_labels_csv(path)] == [3.0, 100.0, 100000.0]


@pytest.mark.parametrize("name,reason", [
    ("../outside.png", "leaves the dataset folder"), ("sub/../../x.png", "leaves"),
    ("/etc/passwd", "is absolute"), ("C:\\\\x.png", "is absolute"), ("a\x00.png", "NUL"),
])
def test_rows_must_stay_inside_the_folder(tmp_path, name, reason) -> None:
    path = _labels(tmp_path, f'filename,count\n"{name}",1\n')
    with pytest.raises(DataError, match=rf"labels\.csv:2: file name .*{reason}"):
        read_labels_csv(path)


def test_rows_from_elsewhere_are_checked_when_loaded(tmp_path) -> None:
    from countnet.folder import Row, load_rows

    _photo(tmp_path / "outside.png")
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="leaves the dataset folder"):
        load_rows(tmp_path / "data", [Row("../outside.png", 1.0, "x:1")], 16, 1)


def test_encoding_and_csv_errors_name_the_line(tmp_path) -> None:
    with pytest.raises(DataError, match=r"labels\.csv:3: not UTF-8 text \(byte 0xe9"):
        read_labels_csv(_labels(tmp_path, b"filename,count\na.png,1\n\xe9.png,2\n"))
    with pytest.raises(DataError, match=r"labels\.csv:\d+: malformed CSV"):
        read_labels_csv(_labels(tmp_path, 'filename,count\na.png,1\n"b.png,2\n'))
    # A quoted field over two lines: the row is named by the line where it ends.
    with pytest.raises(DataError, match=r"labels\.csv:4: count 'x' is not a number"):
        read_labels_csv(_labels(tmp_path, 'filename,count\na.png,1\n"b\n.png",x\n'))


def test_carpk_names_and_boxes_are_checked(tmp_path) -> None:
    for d in ("Images", "Annotations", "ImageSets"):
        (tmp_path / d).mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("../../etc/secret\n")
    with pytest.raises(DataError, match=r"train\.txt:1: file name .* leaves the dataset folder"):
        load_carpk(tmp_path, 16, 1)
    (tmp_path / "ImageSets" / "train.txt").write_text("a\n")
    _photo(tmp_path / "Images" / "a.png")
    (tmp_path / "Annotations" / "a.txt").write_text("1 1 4 4\nnan 1 4 4\n")
    with pytest.raises(DataError, match=r"a\.txt:2: box coordinates must be finite"):
        load_carpk(tmp_path, 16, 1)
    (tmp_path / "Annotations" / "a.txt").write_bytes(b"1 1 4 4 \xff\n")
    with pytest.raises(DataError, match=r"a\.txt:1: not UTF-8"):
        load_carpk(tmp_path, 16, 1)



@pytest.mark.parametrize("size,reason", [
    ((20000, 20000), "over Pillow's decompression-bomb limit"),
    ((10000, 7000), "10000x7000 px is over the limit of 64000000 decoded pixels"),
])
def test_huge_images_are_refused_before_decoding(tmp_path, size, reason) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        _photo(tmp_path / split / "ok.png")
        (tmp_path / split / "labels.csv").write_text("ok.png,1\nbig.png,2\n")
    png_header(tmp_path / "train" / "big.png", *size)
    _photo(tmp_path / "val" / "big.png")
    with pytest.raises(DataError, match=rf"train.labels\.csv:2: .*big\.png: {reason}"):
        load_labelled_folder(tmp_path, 16, 1, 0.5)
