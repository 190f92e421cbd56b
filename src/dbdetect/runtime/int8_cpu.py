"""Which int8 kernels this CPU runs, and whether a torch int8 file is right and fast on them.

torch's ``x86`` engine runs a quantised conv in oneDNN when the CPU has AVX512-VNNI and in
fbgemm otherwise (``torch.cpu._is_vnni_supported``, the check the engine itself makes).
Without VNNI the kernels multiply u8 activations by s8 weights and add the products in
pairs into 16 bits (``vpmaddubsw``), which saturates at 32767 when ``x0*w0 + x1*w1`` is
larger: 255 * 127 * 2 is. fbgemm's int8 ConvTranspose2d is wrong there for any input.
So a file is safe on every x86 CPU when every pair sum fits (weights within +-63:
255 * 63 * 2 fits) and it holds no int8 deconv; :func:`file_risks` reads both from the file.

``DBDETECT_INT8_ENGINE=fbgemm`` with ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` runs the kernels
of a CPU without VNNI on any x86 CPU (see :data:`AVX2_KERNELS`): the tests use it, so a
machine with VNNI still checks the AVX2 path.
"""

from __future__ import annotations

import os
import warnings

import torch

ENGINE_ENV = "DBDETECT_INT8_ENGINE"
# The environment of a process that runs an AVX2-only CPU's int8 kernels on this one.
AVX2_KERNELS = {ENGINE_ENV: "fbgemm", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
DECONV_OP = "quantized::conv_transpose2d"
_warned: set = set()


def engine() -> str:
    """The quantized engine int8 runs on: ``$DBDETECT_INT8_ENGINE`` if set, else torch's ``x86``."""
    name = os.environ.get(ENGINE_ENV) or "x86"
    supported = torch.backends.quantized.supported_engines
    if name not in supported:
        raise RuntimeError(
            f"torch int8 needs the {name!r} quantized engine, and this torch has "
            f"{', '.join(supported)}: use the fp32 model or an onnxruntime int8 file here"
        )
    return name


def use_engine() -> str:
    """Select :func:`engine`: int8 weights are packed for the engine current when a file loads."""
    name = engine()
    if torch.backends.quantized.engine != name:
        torch.backends.quantized.engine = name
    return name


def has_vnni() -> bool:
    """Whether torch's x86 engine runs this CPU's int8 convs in oneDNN's VNNI kernels."""
    if engine() == "fbgemm":
        return False
    try:
        return bool(torch.cpu._is_vnni_supported())
    except AttributeError:  # a torch without the probe: read the flags
        try:
            with open("/proc/cpuinfo") as f:
                return " avx512_vnni" in f.read()
        except OSError:
            return False


def pair_sums_fit(settings: dict) -> bool:
    """A file's u8 x s8 pair sums stay within 16 bits for any input: 7-bit weights."""
    return int(settings.get("weight_bits", 8)) <= 7


def int8_deconvs(module: torch.jit.ScriptModule) -> int:
    """How many int8 ConvTranspose2d ops a frozen file's graph holds."""
    return str(module.graph).count(DECONV_OP)


def file_risks(module: torch.jit.ScriptModule, settings: dict) -> list[str]:
    """Why this file's int8 would go wrong on a CPU without VNNI ([] when nothing would)."""
    risks = []
    if not pair_sums_fit(settings):
        risks.append("its 8-bit weights overflow the 16-bit pair sums of the int8 kernels")
    if int8_deconvs(module):
        risks.append("its int8 ConvTranspose2d runs in fbgemm, which computes it wrongly")
    return risks


def check_file(path, module: torch.jit.ScriptModule, settings: dict) -> None:
    """Refuse a file that would give wrong boxes on this CPU; say once when int8 is no faster here."""
    if has_vnni():
        return
    risks = file_risks(module, settings)
    if risks:
        raise ValueError(
            f"{path} is a torch int8 file made for CPUs with AVX512-VNNI: on this CPU (no VNNI) "
            f"{' and '.join(risks)}, so it would find no text. Export it again with this dbdetect "
            f"(dbdetect export --int8 --out {os.path.basename(str(path))}), whose files are right on every "
            "x86 CPU, or use the fp32 model or an onnxruntime int8 file"
        )
    note = speed_note()
    if note not in _warned:
        _warned.add(note)
        warnings.warn(note, RuntimeWarning, stacklevel=3)


def speed_note() -> str:
    """What a user on a CPU without VNNI should know about torch int8's speed."""
    return (
        "torch int8 on this CPU (no AVX512-VNNI) runs fbgemm's AVX2 kernels: its boxes are right, but it "
        "is not reliably faster than fp32 here, as it is on CPUs with VNNI. Time both on your images: "
        "the fp32 model or an onnxruntime int8 file may be the faster choice (docs: int8 on every CPU)."
    )
