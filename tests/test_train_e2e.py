"""End-to-end: a few training steps on real ICDAR 2015 images, exact resume, DDP, eval.

Kept tiny (4 images at 256 px, 4 steps) so it fits the CI budget.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dbdetect
from dbdetect.cli import main

MODEL = os.environ.get("DBDETECT_TEST_TRAIN_MODEL", "ppocrv4")
# Where the dbdetect under test lives (site-packages in CI, src/ in a developer run):
# the torchrun workers must import the same one.
SRC = Path(dbdetect.__file__).resolve().parents[1]


def _common(data):
    # 4 images / batch 2 = 2 steps per epoch; epoch 0 has the backbone frozen
    return [
        "train",
        "--train",
        str(data),
        "--val",
        str(data),
        "--val-limit",
        "1",
        "--val-limit-side-len",
        "256",
        "--model",
        MODEL,
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--size",
        "256",
        "--workers",
        "1",
        "--freeze-backbone-epochs",
        "1",
        "--lr",
        "1e-3",
        "--no-progress",
        "--threads",
        "2",
    ]


def _load(p):
    return torch.load(p, map_location="cpu", weights_only=False)


def _backbone_state(sd):
    return {k: v for k, v in sd.items() if k.startswith("backbone.")}


def test_train_freeze_resume_and_checkpoint_loading(tiny_set, tmp_path):
    from dbdetect import models

    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert main(_common(tiny_set) + ["--out", str(straight)]) == 0
    # the same run in three sessions: stop mid-epoch, stop at the epoch boundary, finish
    assert main(_common(tiny_set) + ["--out", str(pieces), "--stop-after", "1"]) == 0
    assert _load(pieces / "last.pt")["step"] == 1
    assert (
        main(
            [
                "train",
                "--resume",
                str(pieces / "last.pt"),
                "--stop-after",
                "1",
                "--workers",
                "0",
                "--no-progress",
                "--threads",
                "2",
            ]
        )
        == 0
    )
    mid = _load(pieces / "last.pt")
    assert (mid["step"], mid["epoch"]) == (2, 1)

    # frozen epoch: backbone weights and BatchNorm statistics untouched, the rest trained
    init = models.create(MODEL, pretrained=True).state_dict()
    bb = _backbone_state(init)
    assert bb and all(torch.equal(mid["model"][k], v) for k, v in bb.items())
    neck = [k for k, v in init.items() if k.startswith("neck.") and v.is_floating_point()]
    assert any(not torch.equal(mid["model"][k], init[k]) for k in neck)

    assert main(["train", "--resume", str(pieces), "--workers", "0", "--no-progress", "--threads", "2"]) == 0
    a, b = _load(straight / "last.pt"), _load(pieces / "last.pt")
    assert a["step"] == b["step"] == 4
    # exact resume: bit-identical weights, and the unfrozen epoch moved the backbone
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert any(not torch.equal(a["model"][k], v) for k, v in bb.items() if v.is_floating_point())
    # fine-tuning from pretrained weights keeps BatchNorm statistics (--bn auto -> frozen)
    stats = [k for k in init if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(a["model"][k], init[k]) for k in stats)
    assert json.loads((pieces / "args.json").read_text())["hparams"]["bn"] == "frozen"

    recs = [json.loads(x) for x in (pieces / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1] and all(0 <= r["hmean"] <= 1 for r in epochs)
    for name in ("best.pt", "last.pt", "metrics.png", "args.json"):
        assert (pieces / name).is_file()

    best = _load(pieces / "best.pt")
    assert {"arch", "model", "cfg"} <= set(best)
    m = models.create(str(pieces / "best.pt")).eval()
    assert m.cfg == best["cfg"]
    with torch.no_grad():
        y = m(torch.zeros(1, 3, 64, 64))
    assert y.shape == (1, 1, 64, 64)


def test_resume_after_the_starting_checkpoint_is_gone(tiny_set, tmp_path):
    from dbdetect import models

    # a run started from a checkpoint file (a fine-tuned model with its own cfg)
    start = tmp_path / "start.pt"
    m = models.create(MODEL, pretrained=True)
    cfg = dict(m.cfg, thresh=0.25)
    torch.save({"arch": MODEL, "model": m.state_dict(), "cfg": cfg}, start)
    run = tmp_path / "run"
    common = ["--workers", "0", "--no-progress", "--threads", "2"]
    assert (
        main(
            [
                "train",
                "--train",
                str(tiny_set),
                "--model",
                str(start),
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--size",
                "256",
                "--lr",
                "1e-3",
                "--out",
                str(run),
                "--stop-after",
                "1",
                "--val",
                str(tiny_set),
                "--val-limit",
                "1",
                "--val-limit-side-len",
                "256",
            ]
            + common
        )
        == 0
    )
    start.unlink()  # e.g. resumed on another machine: the run must not need it
    assert main(["train", "--resume", str(run / "last.pt"), "--val-limit", "1"] + common) == 0
    last = _load(run / "last.pt")
    assert last["step"] == 2 and last["cfg"]["thresh"] == 0.25
    # validation keeps the run's setting, so every epoch's H-mean is measured alike
    assert last["train_state"]["val_limit_side_len"] == 256
    assert json.loads((run / "args.json").read_text())["val_limit_side_len"] == 256


def test_keep_snapshots_writes_the_deployed_weights_of_each_save(tiny_set, tmp_path):
    from dbdetect import models

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--train",
                str(tiny_set),
                "--model",
                MODEL,
                "--epochs",
                "2",
                "--batch-size",
                "2",
                "--size",
                "256",
                "--lr",
                "1e-3",
                "--ema",
                "0.9",
                "--save-every",
                "3",
                "--keep-snapshots",
                "--workers",
                "0",
                "--no-progress",
                "--threads",
                "2",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_3.pt"]  # 4 steps, saved every 3
    snap = _load(run / "step_3.pt")
    assert snap["step"] == 3 and "optimizer" not in snap and "ema" not in snap
    # the weight average (what best.pt would hold), not the trained weights; loadable by name
    last = _load(run / "last.pt")
    assert any(not torch.equal(v, last["model"][k]) for k, v in snap["model"].items() if v.is_floating_point())
    assert models.create(str(run / "step_3.pt")).cfg["arch"] == MODEL


def test_eval_cli_progress_bar_can_be_hidden(tiny_set, capsys):
    pytest.importorskip("dbdetect.detector")
    args = ["eval", "--data", str(tiny_set), "--model", MODEL, "--limit", "1", "--limit-side-len", "256"]
    assert main(args) == 0
    assert "eval:" in capsys.readouterr().err  # tqdm's bar
    assert main(args + ["--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "eval:" not in captured.err and "hmean" in captured.out


def test_eval_cli_on_checkpoint(tiny_set, tmp_path):
    pytest.importorskip("dbdetect.detector")
    out = tmp_path / "res.json"
    assert (
        main(
            [
                "eval",
                "--data",
                str(tiny_set),
                "--model",
                MODEL,
                "--limit",
                "2",
                "--limit-side-len",
                "640",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["images"] == 2 and len(res["per_image"]) == 2
    assert 0 <= res["hmean"] <= 1 and res["num_gt_care"] > 0
    assert res["settings"]["limit_side_len"] == 640
    # post-processing options reach the detector (a threshold above every score leaves nothing)
    assert (
        main(
            [
                "eval",
                "--data",
                str(tiny_set),
                "--model",
                MODEL,
                "--limit",
                "2",
                "--limit-side-len",
                "640",
                "--thresh",
                "0.5",
                "--box-thresh",
                "1.01",
                "--unclip-ratio",
                "1.2",
                "--no-dilation",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["settings"] == {
        "limit_side_len": 640,
        "thresh": 0.5,
        "box_thresh": 1.01,
        "unclip_ratio": 1.2,
        "use_dilation": False,
    }
    assert res["num_det_care"] == 0 and res["hmean"] == 0


def _ddp_env():
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }


def _ddp_train(tiny_set, out):
    return [
        "-m",
        "dbdetect",
        "train",
        "--train",
        str(tiny_set),
        "--model",
        MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "1",
        "--size",
        "256",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def ddp_standalone(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *_ddp_train(tiny_set, out),
    ]
    r = subprocess.run(cmd, env=_ddp_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_ddp_two_cpu_processes(ddp_standalone):
    args = json.loads((ddp_standalone / "args.json").read_text())
    # 4 images over 2 processes at batch 1: 2 steps per epoch
    assert args["world_size"] == 2 and args["steps_per_epoch"] == 2
    assert _load(ddp_standalone / "last.pt")["step"] == 2


def test_ddp_two_nodes_with_a_rendezvous_endpoint(tiny_set, ddp_standalone, tmp_path):
    """Two torchrun invocations (two "nodes") meet at a c10d endpoint on 127.0.0.1 and train in step."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two_nodes"
    node = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "dbdetect-test",
        "--local-addr",
        "127.0.0.1",
        *_ddp_train(tiny_set, out),
    ]
    procs = [
        subprocess.Popen(node, env=_ddp_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    assert json.loads((out / "args.json").read_text())["world_size"] == 2
    # Same seed, same per-rank shards: the gradients averaged across the two
    # "nodes" must give exactly the weights of the one-machine DDP run.
    got, ref = _load(out / "last.pt"), _load(ddp_standalone / "last.pt")
    assert got["step"] == ref["step"] == 2
    assert got["model"].keys() == ref["model"].keys()
    assert all(torch.equal(got["model"][k], ref["model"][k]) for k in ref["model"])


def test_two_sets_with_weights_ema_and_multiscale_resume_exactly(tiny_set, ic15, tmp_path):
    # a second set in PaddleOCR's label-file format, two other images
    from dbdetect.data import load_samples

    lines = []
    for s in load_samples(ic15 / "train")[4:6]:
        regions = [
            {"transcription": "###" if ig else t, "points": p.tolist()}
            for p, ig, t in zip(s.polygons, s.ignore, s.texts)
        ]
        lines.append(f"{s.image_path}\t{json.dumps(regions)}")
    labels = tmp_path / "second.txt"
    labels.write_text("\n".join(lines) + "\n")
    common = [
        "train",
        "--train",
        str(tiny_set),
        "--train",
        str(labels),
        "--train-weight",
        "0.5",
        "--train-weight",
        "1",
        "--val",
        str(tiny_set),
        "--val-limit",
        "1",
        "--val-limit-side-len",
        "256",
        "--model",
        MODEL,
        "--epochs",
        "1",
        "--batch-size",
        "1",
        "--size",
        "224",
        "--size-max",
        "288",
        "--ema",
        "0.9",
        "--ohem-ratio",
        "5",
        "--max-angle",
        "5",
        "--workers",
        "0",
        "--no-progress",
        "--log-every",
        "1",
        "--threads",
        "2",
        "--lr",
        "1e-3",
    ]
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert main(common + ["--out", str(straight)]) == 0
    assert main(common + ["--out", str(pieces), "--stop-after", "2"]) == 0
    assert (
        main(
            ["train", "--resume", str(pieces), "--workers", "0", "--no-progress", "--threads", "2", "--log-every", "1"]
        )
        == 0
    )
    args = json.loads((straight / "args.json").read_text())
    # 4 images at weight 0.5 + 2 at weight 1 = 4 draws per epoch, batch 1
    assert args["steps_per_epoch"] == 4 and [s["weight"] for s in args["train_sets"]] == [0.5, 1.0]
    assert args["hparams"]["ema"] == 0.9 and args["hparams"]["size_max"] == 288
    a, b = _load(straight / "last.pt"), _load(pieces / "last.pt")
    assert a["step"] == b["step"] == 4 and a["ema"]["updates"] == b["ema"]["updates"] == 4

    # The resumed run trains on the same batches. Its weights are not compared bit for bit: torch's
    # CPU convolution backward gives gradients that differ in the last bits on the first call with
    # a new input shape in a process (measured: 3e-8), and multi-scale batches bring new shapes
    # at different moments in the two runs. Per-step losses separate "same batches" from "other batches".
    def losses(run):
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in recs if r["type"] == "train"]

    assert len(losses(straight)) == 4 and losses(pieces) == pytest.approx(losses(straight), rel=1e-5)
    # best.pt (the only epoch) holds the average, not the last trained weights
    best = _load(pieces / "best.pt")
    assert all(torch.equal(best["model"][k], b["ema"]["model"][k]) for k in best["model"])
    assert any(not torch.equal(best["model"][k], b["model"][k]) for k in best["model"])
