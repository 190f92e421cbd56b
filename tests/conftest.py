import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data next to the repository (CI lays a copy there); override with DBDETECT_DATA.
DATA = Path(os.environ.get("DBDETECT_DATA", ROOT.parent / "shared" / "data"))
IC15 = DATA / "icdar2015"
# Every Ray the tests start stays on 127.0.0.1 (Ray on Linux would otherwise
# use the machine's network address); read when ray is first imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no cloud-metadata probes


@pytest.fixture(scope="session")
def ic15():
    if not (IC15 / "test" / "images").is_dir():
        pytest.skip(f"ICDAR 2015 data not found at {IC15} (set DBDETECT_DATA)")
    return IC15
