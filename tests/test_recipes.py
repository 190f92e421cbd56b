"""Recipe files: each bundled recipe trains for a few steps, flags override the file, resume keeps it,
and a bad file is refused by name before anything is written."""

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import DATA

from dbdetect.cli import main
from dbdetect.training import fit, read_recipe
from dbdetect.training.recipe import bundled_recipes

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
# a few steps on a handful of small images; everything else as the recipe has it
TINY = dict(
    max_steps=2,
    batch_size=2,
    size=256,
    size_max=256,
    val_limit=1,
    val_limit_side_len=256,
    workers=0,
    threads=2,
    no_progress=True,
)
SPLITS = {"ppocrv4_ic15": (900, 100), "ppocrv4_td500": (270, 30), "ppocrv4_doc": (128, 21)}


@pytest.fixture(scope="module")
def tiny_set(ic15, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_recipe_set")
    (d / "images").mkdir()
    (d / "gts").mkdir()
    for i in (1, 2, 3):
        shutil.copy(ic15 / "train" / "images" / f"img_{i}.jpg", d / "images")
        shutil.copy(ic15 / "train" / "gts" / f"gt_img_{i}.txt", d / "gts")
    return d


def test_every_released_model_has_a_recipe():
    assert {p.stem for p in RECIPES} >= set(SPLITS)
    assert set(bundled_recipes()) == {p.stem for p in RECIPES}
    for path in RECIPES:
        r = read_recipe(path)
        assert r["split"]["held_out"] and r["tune"], path.name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_a_few_steps(recipe, ic15, tmp_path):
    res = fit(recipe, data_root=str(DATA), out=str(tmp_path / "run"), **TINY)
    assert res.steps == 2 and res.stopped is None and res.run_dir == tmp_path / "run"
    assert res.best["hmean"] is not None and 0.0 <= res.best["hmean"] <= 1.0
    assert (res.run_dir / "best.pt").is_file()
    n_train, n_held = SPLITS.get(recipe.stem, (None, None))
    lines = {p: (res.run_dir / "split" / p).read_text().splitlines() for p in ("train.txt", "held_out.txt")}
    if n_train is not None:
        assert (len(lines["train.txt"]), len(lines["held_out.txt"])) == (n_train, n_held)
    assert not {ln.split("\t")[0] for ln in lines["train.txt"]} & {ln.split("\t")[0] for ln in lines["held_out.txt"]}
    written = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    source = read_recipe(recipe)
    for key in ("lr", "backbone_lr_scale", "prob_loss", "epochs"):
        assert written[key] == source[key], key
    assert written["batch_size"] == 2 and written["tune"] == source["tune"]


def test_flags_override_the_file_and_resume_keeps_it(tiny_set, tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        f"train: {tiny_set}\nval: {tiny_set}\nepochs: 2\nbatch_size: 2\nsize: 256\nlr: 3e-4\n"
        "val_limit: 1\nval_limit_side_len: 256\nlog_every: 1\nmax_angle: 5\n"
    )
    run = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--max-angle", "7", "--out", str(run), "--stop-after", "1"])
    assert rc == 0
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["max_angle"] == 7.0  # the flag
    assert written["lr"] == 3e-4 and written["log_every"] == 1  # the file ("3e-4" read as a number)
    # resumed without --config: the run's own config.yaml is its recipe
    res = fit(resume=str(run), workers=0, no_progress=True)
    assert res.steps == 2 and res.stopped is None
    resumed = yaml.safe_load((run / "config.yaml").read_text())
    assert resumed["log_every"] == 1 and resumed["val_limit"] == 1 and resumed["stop_after"] is None
    steps = [r for r in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert len(steps) == 2  # log_every 1 came back from config.yaml


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochz: 3\n", "unknown setting 'epochz' (did you mean 'epochs'?)"),
        ("epochs: three\n", "epochs must be int, got 'three'"),
        ("pretrained: 1\n", "pretrained must be bool"),
        ("- epochs\n", "a recipe is a mapping of settings"),
        ("epochs: [1\n", "is not valid YAML"),
        ("split: 3\n", "'split' must be a mapping"),
        ("split: {source: x, held_out: {every: 1}}\n", "held_out every must be an integer >= 2"),
        ("split: {source: x, held_out: {last: 100}}\n", "held_out must be one rule"),
    ],
)
def test_bad_recipes_are_refused_by_name(text, message, ic15, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text.replace("source: x", f"source: {ic15 / 'train'}"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--overwrite"])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "run" / "last.pt").exists()


def test_missing_recipe_names_the_bundled_ones(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "recipe file not found" in err and "ppocrv4_ic15" in err


def test_fit_refuses_unknown_keywords():
    with pytest.raises(ValueError, match="unknown setting 'batchsize'"):
        fit(batchsize=4)
    with pytest.raises(ValueError, match="lr must be int or float"):
        fit({"lr": [1, 2]})


def test_tune_reads_the_recipe_grid(tiny_set, tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("tune:\n  sizes: [256]\n  thresh: [0.3]\n  box_thresh: [0.5, 0.6]\n  unclip_ratio: [1.5]\n")
    args = ["tune", "--data", str(tiny_set), "--limit", "1", "--config", str(cfg), "--threads", "2"]
    assert main(args + ["--dilation", "off"]) == 0
    assert "best of 2 settings" in capsys.readouterr().out  # 1 x 1 x 2 x 1 x dilation off (the flag)
    cfg.write_text("tune:\n  sizes: [256]\n  unclip: [1.5]\n")
    assert main(args) == 2
    assert "tune: unknown setting 'unclip'" in capsys.readouterr().err
