"""`dbdetect detect` on files and folders: JSON lines, pictures, bad inputs, never overwriting."""

import json
import shutil
import subprocess
import sys

import pytest


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "dbdetect", "detect", "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def folder(ic15, tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    (d / "sub").mkdir()
    shutil.copy(ic15 / "test" / "images" / "img_1.jpg", d / "a.jpg")
    shutil.copy(ic15 / "test" / "images" / "img_2.jpg", d / "sub" / "b.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_with_a_corrupt_image(folder, tmp_path):
    out = tmp_path / "res.jsonl"
    vis = tmp_path / "vis"
    r = _run(folder, "--out", out, "--vis", vis)
    assert r.returncode == 1, r.stderr  # the broken image makes the run fail at the end...
    assert "broken.jpg" in r.stderr  # ...named in a clear message...
    assert "Traceback" not in r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["path"].rsplit("/", 1)[-1] for rec in recs) == ["a.jpg", "b.jpg"]  # ...and the others went on
    for rec in recs:
        assert rec["width"] == 1280 and rec["height"] == 720
        assert len(rec["polygons"]) == len(rec["scores"]) > 0
        assert all(len(p) == 4 and len(p[0]) == 2 for p in rec["polygons"])
    assert (vis / "a_det.jpg").is_file() and (vis / "sub" / "b_det.jpg").is_file()


def test_stdout_and_poly_boxes(folder):
    r = _run(folder / "a.jpg", "--box-type", "poly")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[0])
    assert rec["polygons"] and all(len(p) >= 4 for p in rec["polygons"])


def test_refuses_to_overwrite(folder, tmp_path):
    out = tmp_path / "res.jsonl"
    out.write_text("precious\n")
    r = _run(folder / "a.jpg", "--out", out)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert out.read_text() == "precious\n"
    before = (folder / "a.jpg").read_bytes()
    r = _run(folder / "a.jpg", "--out", folder / "a.jpg")
    assert r.returncode == 2 and "input" in r.stderr
    assert (folder / "a.jpg").read_bytes() == before


def test_missing_path_and_empty_folder(tmp_path):
    r = _run(tmp_path / "nope.jpg")
    assert r.returncode == 2 and "nope.jpg" in r.stderr and "no such file" in r.stderr
    (tmp_path / "empty").mkdir()
    r = _run(tmp_path / "empty")
    assert r.returncode == 2 and "no images" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_model_is_a_clear_error(folder):
    r = _run(folder / "a.jpg", "--model", "nonexistent_model")
    assert r.returncode == 2 and "nonexistent_model" in r.stderr and "Traceback" not in r.stderr


def test_score_mode_reaches_the_detector(folder):
    from dbdetect import Detector

    recs = {}
    for mode in ("fast", "slow"):
        r = _run(folder / "a.jpg", "--score-mode", mode, "--box-thresh", "0.5", "--threads", "2")
        assert r.returncode == 0, r.stderr
        recs[mode] = json.loads(r.stdout.strip().splitlines()[0])["scores"]
        want = [d.score for d in Detector("ppocrv4", score_mode=mode, box_thresh=0.5)(folder / "a.jpg")]
        assert recs[mode] == pytest.approx(want, abs=1e-5)  # JSON keeps 5 decimals
    assert recs["fast"] != recs["slow"]
