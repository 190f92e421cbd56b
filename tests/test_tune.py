"""``dbdetect tune``: the grid equals direct evaluation, the cfg write-back, bad labels."""

import json
import shutil

import pytest
import torch

from dbdetect import Detector, models
from dbdetect.cli import main
from dbdetect.data import load_samples
from dbdetect.evaluate import evaluate_model
from dbdetect.tune import SETTING_KEYS, Grid, save_tuned, tune

MODEL = "ppocrv4"


@pytest.fixture(scope="module")
def val_set(ic15, tmp_path_factory):
    d = tmp_path_factory.mktemp("tune_val")
    (d / "images").mkdir()
    (d / "gts").mkdir()
    for i in (1, 2, 3):
        shutil.copy(ic15 / "test" / "images" / f"img_{i}.jpg", d / "images")
        shutil.copy(ic15 / "test" / "gts" / f"gt_img_{i}.txt", d / "gts")
    return d


def test_grid_rows_equal_direct_evaluation(val_set):
    samples = load_samples(val_set)
    net = models.create(MODEL)
    grid = Grid(
        limit_side_len=(320, 480),
        thresh=(0.3,),
        box_thresh=(0.3, 0.7),
        unclip_ratio=(1.5,),
        use_dilation=(True, False),
        score_mode=("fast", "slow"),
    )
    rows = tune(net, samples, grid, progress=False)
    assert len(rows) == len(grid) == 16
    assert [r["hmean"] for r in rows] == sorted((r["hmean"] for r in rows), reverse=True)
    assert len({(r["limit_side_len"], r["box_thresh"], r["use_dilation"], r["score_mode"]) for r in rows}) == 16
    # the settings matter on these images, so equal counts below are not a coincidence
    assert len({r["num_det_care"] for r in rows}) > 1
    slow = next(r for r in rows if r["limit_side_len"] == 480 and r["score_mode"] == "slow")
    for r in (rows[0], rows[-1], next(r for r in rows if r["limit_side_len"] == 480 and not r["use_dilation"]), slow):
        ref = evaluate_model(
            net,
            samples,
            limit_side_len=r["limit_side_len"],
            box_thresh=r["box_thresh"],
            thresh=r["thresh"],
            unclip_ratio=r["unclip_ratio"],
            use_dilation=r["use_dilation"],
            score_mode=r["score_mode"],
        )
        for k in ("matched", "num_gt_care", "num_det_care", "hmean", "precision", "recall"):
            assert r[k] == ref[k], (k, r)


def test_grid_rejects_bad_values():
    with pytest.raises(ValueError, match="limit_side_len"):
        Grid(limit_side_len=(16,))
    with pytest.raises(ValueError, match="box_thresh"):
        Grid(box_thresh=(1.5,))
    with pytest.raises(ValueError, match="thresh"):
        Grid(thresh=())
    with pytest.raises(ValueError, match="use_dilation"):
        Grid(use_dilation=("on",))
    with pytest.raises(ValueError, match="score_mode"):
        Grid(score_mode=("polygon",))


def test_write_back_reaches_detector_and_drops_training_state(tmp_path):
    net = models.create(MODEL)
    src = tmp_path / "last.pt"
    torch.save(
        {
            "arch": net.cfg["arch"],
            "model": net.state_dict(),
            "cfg": dict(net.cfg),
            "step": 7,
            "optimizer": {"state": {}},
            "train_state": {"hparams": {}},
        },
        src,
    )
    settings = {
        "limit_side_len": 1056,
        "limit_type": "max",
        "thresh": 0.25,
        "box_thresh": 0.65,
        "unclip_ratio": 1.35,
        "use_dilation": False,
        "score_mode": "slow",
        "hmean": 0.5,
    }
    out = save_tuned(src, settings, tmp_path / "tuned.pt", info={"hmean": 0.5})
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert "optimizer" not in ck and "train_state" not in ck and ck["step"] == 7 and ck["tuned"] == {"hmean": 0.5}
    assert "hmean" not in ck["cfg"]
    det = Detector(str(out))
    assert (det.limit_side_len, det.limit_type) == (1056, "max")
    assert {k: det.post_kwargs[k] for k in ("thresh", "box_thresh", "unclip_ratio", "use_dilation", "score_mode")} == {
        "thresh": 0.25,
        "box_thresh": 0.65,
        "unclip_ratio": 1.35,
        "use_dilation": False,
        "score_mode": "slow",
    }
    # explicit arguments still win over the tuned defaults
    assert Detector(str(out), thresh=0.4).post_kwargs["thresh"] == 0.4
    # the source checkpoint is untouched; an existing output is not replaced without overwrite
    assert "optimizer" in torch.load(src, map_location="cpu", weights_only=False)
    with pytest.raises(ValueError, match="exists"):
        save_tuned(src, settings, out)
    # a registry name becomes a checkpoint of its weights
    out2 = save_tuned(MODEL, {"limit_side_len": 800}, tmp_path / "v4.pt")
    assert Detector(str(out2)).limit_side_len == 800
    ref = models.create(MODEL).state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in models.create(str(out2)).state_dict().items())


def test_cli_prints_table_and_writes_best(val_set, tmp_path, capsys):
    out, rows_json = tmp_path / "tuned.pt", tmp_path / "rows.json"
    argv = [
        "tune",
        "--data",
        str(val_set),
        "--model",
        MODEL,
        "--sizes",
        "320",
        "--thresh",
        "0.3",
        "--box-thresh",
        "0.3,0.7",
        "--unclip-ratio",
        "1.5",
        "--dilation",
        "on,off",
        "--score-mode",
        "slow",
        "--out",
        str(out),
        "--json",
        str(rows_json),
        "--limit",
        "2",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    rows = json.loads(rows_json.read_text())["rows"]
    assert len(rows) == 4 and rows[0]["hmean"] >= rows[-1]["hmean"] and {r["score_mode"] for r in rows} == {"slow"}
    best_line = next(ln for ln in text.splitlines() if ln.startswith("*"))
    assert f"{100 * rows[0]['hmean']:.2f}" in best_line
    cfg = torch.load(out, map_location="cpu", weights_only=True)["cfg"]
    assert {k: cfg[k] for k in SETTING_KEYS} == {k: rows[0][k] for k in SETTING_KEYS}
    # a second run does not replace the file without --overwrite, and says so before searching
    before = out.stat().st_mtime_ns
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    with pytest.raises(SystemExit):
        main(["tune", "--data", str(val_set), "--thresh", "0.3,abc"])
    with pytest.raises(SystemExit):
        main(["tune", "--data", str(val_set), "--score-mode", "fast,round"])


def test_bad_label_line_names_file_and_line(tmp_path, capsys):
    import cv2
    import numpy as np

    (tmp_path / "images").mkdir()
    (tmp_path / "gts").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "gts" / "gt_a.txt").write_text("0,0,10,0,10,10,0,10,ok\n0,0,10,zero,10,10,0,10,bad\n")
    assert main(["tune", "--data", str(tmp_path), "--sizes", "64", "--out", str(tmp_path / "t.pt")]) == 2
    err = capsys.readouterr().err
    assert "gt_a.txt:2" in err and "dbdetect tune: error" in err
    assert not (tmp_path / "t.pt").exists()
