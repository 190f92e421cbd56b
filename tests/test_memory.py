"""dbdetect.memory: glibc keeps large freed blocks, so passes stop page-faulting them anew.

Each case runs in a fresh interpreter: the setting is process-wide and set once.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Minor page faults of 8 rounds of allocating, touching and freeing a 96 MiB block
# (above glibc's largest default mmap threshold, 32 MiB). With glibc's defaults each
# round maps fresh pages: 24,576 faults of 4 KiB pages, or a few hundred where NumPy's
# huge-page advice is taken (560 measured here); kept memory faults only on the first.
_PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import dbdetect.memory as m
    {setup}
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(96 << 18, np.float32); del a          # first touch: faults either way
    f0 = faults()
    for _ in range(8):
        a = np.ones(96 << 18, np.float32); del a
    print(applied, faults() - f0)
""")


def _run(setup: str, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    full.pop("DBDETECT_MALLOC", None)
    full.update(env)
    r = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setup=setup)], env=full, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    applied, faults = r.stdout.split()
    return applied == "True", int(faults)


def _is_glibc():
    from dbdetect.memory import _glibc_mallopt

    return _glibc_mallopt() is not None


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_freed_blocks_are_reused_without_new_page_faults():
    applied, faults = _run("applied = m.keep_freed_memory()")
    assert applied
    default_applied, default_faults = _run("applied = None")
    assert not default_applied and default_faults > 8 * 100  # the behaviour being fixed: every round faults
    assert faults < default_faults / 20, (faults, default_faults)


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
@pytest.mark.parametrize(
    "env", [{"DBDETECT_MALLOC": "0"}, {"MALLOC_MMAP_THRESHOLD_": "1048576"}, {"MALLOC_TRIM_THRESHOLD_": "1048576"}]
)
def test_users_own_setting_wins(env):
    applied, _ = _run("applied = m.keep_freed_memory()", **env)
    assert not applied


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_detector_on_cpu_applies_it_once():
    setup = "import dbdetect\ndbdetect.Detector('ppocrv4')\napplied = m._state.get('done')"
    applied, faults = _run(setup)
    assert applied and faults < 8 * 2000
