import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dbdetect
from dbdetect import _native


def test_version_is_exposed():
    assert dbdetect.__version__.count(".") == 2


def test_native_module_is_compiled_extension():
    # Guards against a silent pure-Python fallback: the module must be a shared library.
    suffix = Path(_native.__file__).suffix
    assert suffix in (".so", ".pyd"), _native.__file__
    assert _native.COMPILED is True


@pytest.mark.skipif(
    not os.environ.get("DBDETECT_TEST_INSTALLED"), reason="developer run against src/ (CI sets DBDETECT_TEST_INSTALLED)"
)
def test_tests_run_against_installed_wheel():
    # CI tests the installed wheel, so a file missing from the wheel fails there.
    pkg = Path(dbdetect.__file__).resolve()
    assert "site-packages" in pkg.parts, pkg
    # The bundled weights must come from inside the wheel, not from a source checkout.
    from dbdetect.models import weights_dir

    wdir = weights_dir().resolve()
    assert wdir == pkg.parent / "weights", wdir
    assert (wdir / "ppocrv4_det.pt").is_file() and (wdir / "ppocrv3_det.pt").is_file() and (wdir / "NOTICE").is_file()
    from dbdetect.models import int8_file, list_int8_models

    for name in list_int8_models():  # the int8 models too, each from inside the wheel
        assert int8_file(name).resolve().parent == wdir, name


def _ref_area_perimeter(p):
    x, y = p[:, 0], p[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    perim = np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum()
    return area, perim


@pytest.mark.parametrize("seed", range(20))
def test_area_perimeter_parity(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    scale = 10.0 ** rng.integers(-2, 5)
    p = rng.normal(size=(n, 2)) * scale + rng.normal() * 1e4
    a, perim = _native.polygon_area_perimeter(np.ascontiguousarray(p))
    ra, rl = _ref_area_perimeter(p)
    assert a == pytest.approx(ra, rel=1e-6, abs=1e-3 * scale**2)
    assert perim == pytest.approx(rl, rel=1e-9)


def test_area_perimeter_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN or infinite"):
        _native.polygon_area_perimeter(np.array([[0, 0], [1, np.nan], [1, 1]], dtype=np.float64))
    with pytest.raises(ValueError, match="shape"):
        _native.polygon_area_perimeter(np.zeros((4, 3)))
    with pytest.raises((ValueError, TypeError)):
        _native.polygon_area_perimeter(np.zeros((4, 2), dtype=np.float32))


def test_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "dbdetect", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and dbdetect.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "dbdetect", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: dbdetect" in out.stdout
