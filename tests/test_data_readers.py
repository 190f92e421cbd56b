"""Label readers: ICDAR 2015 folders, variable-length polygons, Total-Text, PaddleOCR files."""

import json
import warnings

import cv2
import numpy as np
import pytest

from dbdetect.data import LabelError, load_samples


def _img(path, h=40, w=60):
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def _write(path, text, bom=False, crlf=False):
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_icdar2015_folder(tmp_path, bom, crlf):
    (tmp_path / "images").mkdir()
    (tmp_path / "gts").mkdir()
    _img(tmp_path / "images" / "img_1.jpg")
    _img(tmp_path / "images" / "img_2.png")
    _write(
        tmp_path / "gts" / "gt_img_1.txt",
        "377,117,463,117,465,130,378,130,Genaxis Theatre\n"
        "1,2,3,4,5,6,7,8,Hello, world,again\n"
        "10.5,20,30,20,30,40,10,40,###\n"
        "\n"
        "0,0,9,0,9,9,0,9,\n",
        bom=bom,
        crlf=crlf,
    )
    _write(tmp_path / "gts" / "gt_img_2.txt", "", bom=bom)
    s = load_samples(tmp_path)
    assert [x.image_path.name for x in s] == ["img_1.jpg", "img_2.png"]
    a = s[0]
    assert a.texts == ["Genaxis Theatre", "Hello, world,again", "###", ""]
    assert a.ignore == [False, False, True, False]
    np.testing.assert_array_equal(a.polygons[0], [[377, 117], [463, 117], [465, 130], [378, 130]])
    assert a.polygons[2][0, 0] == 10.5 and a.polygons[0].dtype == np.float32
    assert s[1].polygons == [] and s[1].ignore == []


def test_images_and_gts_in_one_folder(tmp_path):
    _img(tmp_path / "a.jpg")
    _write(tmp_path / "gt_a.txt", "0,0,10,0,10,10,0,10,x\n")
    s = load_samples(tmp_path)
    assert len(s) == 1 and s[0].texts == ["x"]


def test_malformed_line_names_file_and_line(tmp_path):
    _img(tmp_path / "a.jpg")
    _write(tmp_path / "gt_a.txt", "0,0,10,0,10,10,0,10,ok\n0,0,10,zero,10,10,0,10,bad\n1,2,3\n", bom=True)
    with pytest.raises(LabelError, match=r"gt_a\.txt:2"):
        load_samples(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = load_samples(tmp_path, lenient=True)
    assert s[0].texts == ["ok"]
    msgs = [str(x.message) for x in w]
    assert any("gt_a.txt:2" in m for m in msgs) and any("gt_a.txt:3" in m for m in msgs)


def test_missing_label_file(tmp_path):
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "b.jpg")
    _write(tmp_path / "gt_a.txt", "0,0,10,0,10,10,0,10,x\n")
    with pytest.raises(LabelError, match="b.jpg"):
        load_samples(tmp_path)
    with pytest.warns(UserWarning, match="b.jpg"):
        assert len(load_samples(tmp_path, lenient=True)) == 1


def test_polygon_format_variable_length(tmp_path):
    _img(tmp_path / "a.jpg")
    _write(
        tmp_path / "gt_a.txt",
        "0,0,10,0,5,8,tri\n"
        "0,0,10,0,20,5,10,10,0,10,0,5,six points, with comma\n"
        "0,0,10,0,10,10,0,10,2015\n"
        "0,0,10,0,10,10,###\n",
    )
    s = load_samples(tmp_path, fmt="polygon")[0]
    assert [len(p) for p in s.polygons] == [3, 6, 4, 3]
    assert s.texts == ["tri", "six points, with comma", "2015", "###"]
    assert s.ignore == [False, False, False, True]
    _write(tmp_path / "gt_a.txt", "0,0,10,0,text\n")
    with pytest.raises(LabelError, match=r"gt_a\.txt:1"):
        load_samples(tmp_path, fmt="polygon")


def test_totaltext_format(tmp_path):
    _img(tmp_path / "img11.jpg")
    _write(
        tmp_path / "poly_gt_img11.txt",
        "x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'm'], transcriptions: [u'nauGHTY']\n"
        "x: [[1 2 3 4 5 6]], y: [[10 11 12 13 14 15]], ornt: [u'c'], transcriptions: [u'a, b']\n"
        "x: [[1 20 3]], y: [[1 2 30]], ornt: [u'#'], transcriptions: [u'#']\n",
    )
    s = load_samples(tmp_path)[0]  # auto-detected from the "x:" prefix
    assert s.texts == ["nauGHTY", "a, b", "#"] and s.ignore == [False, False, True]
    np.testing.assert_array_equal(s.polygons[0], [[115, 322], [503, 346], [494, 426], [115, 404]])
    assert s.polygons[1].shape == (6, 2)
    _write(tmp_path / "poly_gt_img11.txt", "x: [[1 2 3]], y: [[1 2]], ornt: [u'c'], transcriptions: [u'a']\n")
    with pytest.raises(LabelError, match=r"poly_gt_img11\.txt:1"):
        load_samples(tmp_path, fmt="totaltext")


def test_paddle_label_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    _img(tmp_path / "imgs" / "a.jpg")
    regions = [
        {"transcription": "hi, there", "points": [[0, 0], [10, 0], [10, 5], [0, 5]]},
        {"transcription": "###", "points": [[1, 1], [4, 1], [4, 4]]},
    ]
    line = "imgs/a.jpg\t" + json.dumps(regions, ensure_ascii=False)
    _write(tmp_path / "train.txt", line + "\n", bom=True)
    s = load_samples(tmp_path / "train.txt")
    assert s[0].image_path == tmp_path / "imgs" / "a.jpg" and s[0].image_path.is_file()
    assert s[0].texts == ["hi, there", "###"] and s[0].ignore == [False, True]
    # --root overrides the label file's folder
    (tmp_path / "lists").mkdir()
    _write(tmp_path / "lists" / "l.txt", line + "\n")
    assert load_samples(tmp_path / "lists" / "l.txt", root=tmp_path)[0].image_path == tmp_path / "imgs" / "a.jpg"
    _write(tmp_path / "bad.txt", line + '\nimgs/a.jpg\t[{"points": [[0, 0], [1]]}]\nno tab here\n')
    with pytest.raises(LabelError, match=r"bad\.txt:2"):
        load_samples(tmp_path / "bad.txt")
    with pytest.warns(UserWarning):
        assert len(load_samples(tmp_path / "bad.txt", lenient=True)) == 1


def test_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_samples(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown label format"):
        load_samples(tmp_path, fmt="coco")


def test_reads_real_icdar2015(ic15):
    s = load_samples(ic15 / "test")
    assert len(s) == 500
    n = sum(len(x.polygons) for x in s)
    assert n > 2000 and all(p.shape == (4, 2) for x in s for p in x.polygons)
    assert 0 < sum(sum(x.ignore) for x in s) < n
    assert not any(t.startswith("\ufeff") for x in s for t in x.texts)
