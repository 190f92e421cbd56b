import os
import shutil
from pathlib import Path

import pytest

from dbdetect.distributed import keep_on_loopback

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data next to the repository (CI lays a copy there); override with DBDETECT_DATA.
DATA = Path(os.environ.get("DBDETECT_DATA", ROOT.parent / "shared" / "data"))
IC15 = DATA / "icdar2015"
# Every Ray the tests start stays on 127.0.0.1 and sends nothing off it (no
# network-address swap, no usage reports, no cloud-metadata probe); read when
# ray is first imported. dbdetect.distributed imports no ray itself.
keep_on_loopback()


@pytest.fixture(scope="session")
def ic15():
    if not (IC15 / "test" / "images").is_dir():
        pytest.skip(f"ICDAR 2015 data not found at {IC15} (set DBDETECT_DATA)")
    return IC15


@pytest.fixture(scope="session")
def funsd():
    folder = DATA / "funsd" / "train"
    if not (folder / "annotations").is_dir():
        pytest.skip(f"FUNSD data not found at {folder} (set DBDETECT_DATA)")
    return folder


@pytest.fixture(scope="session")
def tiny_set(ic15, tmp_path_factory):
    """Four ICDAR 2015 training images with their labels: a dataset folder for a few training steps."""
    d = tmp_path_factory.mktemp("tiny_ic15")
    (d / "images").mkdir()
    (d / "gts").mkdir()
    for i in (1, 2, 3, 4):
        shutil.copy(ic15 / "train" / "images" / f"img_{i}.jpg", d / "images")
        shutil.copy(ic15 / "train" / "gts" / f"gt_img_{i}.txt", d / "gts")
    return d


@pytest.fixture(autouse=True)
def _own_plan_cache(tmp_path_factory, monkeypatch):
    """Each test measures its own stream plans: one test's forged timings must not choose another's plan."""
    monkeypatch.setenv("DBDETECT_PLAN_CACHE", str(tmp_path_factory.mktemp("plans") / "plans.json"))
