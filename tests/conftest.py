import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data next to the repository (CI lays a copy there); override with DBDETECT_DATA.
DATA = Path(os.environ.get("DBDETECT_DATA", ROOT.parent / "shared" / "data"))
IC15 = DATA / "icdar2015"


@pytest.fixture(scope="session")
def ic15():
    if not (IC15 / "test" / "images").is_dir():
        pytest.skip(f"ICDAR 2015 data not found at {IC15} (set DBDETECT_DATA)")
    return IC15
