"""Ray Data: detect_dataset equals the in-process detector and survives a killed actor; detect --ray.

They start a local Ray kept on 127.0.0.1 by conftest.py's keep_on_loopback():
no network-address swap, no usage reports, and Ray's cloud-metadata probe goes
to a closed loopback port. DBDETECT_RAY_TESTS=0 skips them.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import dbdetect
from dbdetect import Detector

if os.environ.get("DBDETECT_RAY_TESTS") == "0":
    pytest.skip("Ray tests skipped with DBDETECT_RAY_TESTS=0", allow_module_level=True)
ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(dbdetect.__file__).resolve().parents[1]
KW = dict(limit_side_len=320, limit_type="max")  # small inputs keep CI quick; some images still have text


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def paths(ic15):
    return [str(ic15 / "test" / "images" / f"img_{i}.jpg") for i in range(1, 21)]


@pytest.fixture(scope="module")
def reference(paths):
    import torch

    threads = torch.get_num_threads()
    try:  # actors run 1 torch thread, and the thread count changes the last float bits
        det = Detector("ppocrv4", num_threads=1, **KW)
        return {p: det(p) for p in paths}
    finally:
        torch.set_num_threads(threads)


def _check(rows, reference):
    assert sorted(r["path"] for r in rows) == sorted(reference)  # every image exactly once
    for r in rows:
        ref = reference[r["path"]]
        assert r["error"] is None
        assert [float(s) for s in r["scores"]] == [d.score for d in ref]
        got = [np.asarray(p, np.float32) for p in r["polygons"]]
        assert len(got) == len(ref) and all(np.array_equal(g, d.polygon) for g, d in zip(got, ref))
    assert sum(len(r["scores"]) for r in rows) > 0


def test_detect_dataset_equals_single_process(local_ray, paths, reference):
    """Bit-exact at batch_size=1: batched forward passes may differ in the last float bits (oneDNN)."""
    from dbdetect.distributed import detect_dataset

    ds = ray.data.from_items([{"path": p, "id": i} for i, p in enumerate(paths)], override_num_blocks=4)
    rows = detect_dataset(ds, model="ppocrv4", batch_size=1, concurrency=2, **KW).take_all()
    _check(rows, reference)
    assert sorted(r["id"] for r in rows) == list(range(20))  # input columns kept

    few = paths[:3]
    by_bytes = ray.data.from_items([{"path": p, "bytes": Path(p).read_bytes()} for p in few])
    _check(detect_dataset(by_bytes, batch_size=1, **KW).take_all(), {p: reference[p] for p in few})
    from dbdetect.imageio import load_image

    by_array = ray.data.from_items([{"path": p, "image": load_image(p)} for p in few])
    _check(detect_dataset(by_array, batch_size=1, **KW).take_all(), {p: reference[p] for p in few})


def test_bad_rows_are_reported_not_fatal(local_ray, paths):
    from dbdetect.distributed import detect_dataset

    ds = ray.data.from_items([{"path": paths[0]}, {"path": "/nonexistent/x.jpg"}])
    rows = {r["path"]: r for r in detect_dataset(ds, batch_size=2, **KW).take_all()}
    assert rows["/nonexistent/x.jpg"]["error"] and "x.jpg" in rows["/nonexistent/x.jpg"]["error"]
    assert rows[paths[0]]["error"] is None
    with pytest.raises(ValueError, match="'image'.*'bytes'.*'path'"):
        detect_dataset(ray.data.from_items([{"file": paths[0]}]).materialize())


def _actor_pids():
    """PIDs of Ray Data map actors that descend from this process (our Ray instance only)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, found = {os.getpid()}, []
    for _ in range(8):  # descendants, a level at a time
        mine |= {p for p, pp in parent.items() if pp in mine}
    for pid in mine:
        try:
            if b"MapWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def test_killed_actor_still_yields_every_image_once(local_ray, paths, reference):
    from dbdetect.distributed import detect_dataset

    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=20)
    rows, killed = [], []
    for row in detect_dataset(ds, batch_size=1, concurrency=1, **KW).iter_rows():
        rows.append(row)
        if not killed:
            pids = _actor_pids()
            assert pids, "no detector actor found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed = pids
            consumed_at_kill = len(rows)
    assert killed and consumed_at_kill < 20
    _check(rows, reference)


def test_cli_ray_writes_parquet_and_resumes(paths, reference, tmp_path):
    imgs, out = tmp_path / "imgs", tmp_path / "out"
    imgs.mkdir()
    for p in paths[:2]:
        (imgs / Path(p).name).symlink_to(p)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "dbdetect",
        "detect",
        "--no-progress",
        "--limit-side-len",
        "320",
        "--limit-type",
        "max",
        "--workers",
        "1",
        "--ray",
        str(imgs),
        "--out",
        str(out),
    ]  # no ADDRESS: a local Ray
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (imgs / Path(paths[2]).name).symlink_to(paths[2])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "not empty" in r.stderr  # no silent mixing with an earlier run
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "2 image(s) already there" in r.stderr, r.stderr[-3000:]
    rows = pq.read_table(out).to_pylist()
    _check(
        [{**row, "path": str(Path(paths[0]).parent / Path(row["path"]).name)} for row in rows],
        {p: reference[p] for p in paths[:3]},
    )


def _netns_ok() -> bool:
    """A private network namespace with its own loopback (root, or unprivileged user namespaces)."""
    if not sys.platform.startswith("linux") or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _netns_ok(), reason="needs `unshare -rn` and `ip` (a private network namespace)")
def test_two_node_example(paths, reference, tmp_path):
    """examples/ray_two_nodes.sh: a head and a worker node, inside a fresh network namespace.

    A multi-node Ray binds its servers to every interface (only a 127.0.0.1 node binds
    to loopback, and Ray will not run one worker node that way). In a namespace of its
    own, the only interface is a private loopback, so nothing is reachable from, or
    sent to, any other machine.
    """
    imgs, out = tmp_path / "imgs", tmp_path / "out"
    imgs.mkdir()
    for p in paths[:4]:
        (imgs / Path(p).name).symlink_to(p)
    ray_tmp = tempfile.mkdtemp(prefix="dbdray", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(
        HEAD_IP="127.0.0.2",
        RAY_EXAMPLE_TMP=ray_tmp,
        PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    )
    script = ROOT / "examples" / "ray_two_nodes.sh"
    inner = (
        f'ip link set lo up && exec bash "{script}" "$1" "$2" 6390 --no-progress --limit-side-len 320 --limit-type max'
    )
    try:
        r = subprocess.run(
            ["unshare", "-rn", "bash", "-c", inner, "sh", str(imgs), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "nodes up: 2" in r.stdout
    rows = pq.read_table(out).to_pylist()
    _check(
        [{**row, "path": str(Path(paths[0]).parent / Path(row["path"]).name)} for row in rows],
        {p: reference[p] for p in paths[:4]},
    )
