"""RSE-FPN's 1x1 input layers in int8 with their squeeze-and-excitation gate folded into the conv.

An RSE layer computes ``c * (1 + gate(mean(c)))`` with ``c = conv1x1(x)`` (no bias).
In int8 that costs a full pass over ``c`` for the mean and a broadcast multiply over it,
and torch's quantized broadcast multiply is slow on channels-last tensors (about a
tenth of the network's time on a 736 x 1312 input). Both are avoidable for a 1x1
conv without bias:

* ``mean(conv(x)) == conv(mean(x))``: the gate comes from the mean of the *input*,
  which has an eighth of the channels at the finest level;
* ``conv(x) * g == conv_{W * g}(x)``: scaling output channel ``k`` by ``g_k`` only
  scales the per-channel weight scale ``k``; the int8 weights stay as they are.

So the quantized layer re-packs its weights with gated scales for each image and
runs one int8 conv. Packing is not free (x86 engine, 2-4 ms a layer on this 2-core
machine, however small the weights), but the four layers together still ran faster
than the gated multiplies they replace: network 88.8 ms against 98.3 ms unfolded
(ppocrv4 at 736 x 1312, fastest of 20 interleaved runs). The float layer stays the
reference: calibration runs it unchanged, as an FX leaf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

# int8 weights within +-63: u8 x s8 pair sums fit in 16 bits on every x86 kernel (dbdetect.runtime.int8_cpu)
SAFE_WEIGHT_QMAX = 63


def gated_1x1_names(net: nn.Module, skip=()) -> list[str]:
    """Names of the RSE layers whose conv is 1x1 without bias (outside the ``skip`` prefixes)."""
    from ..models.necks import RSELayer

    def skipped(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in skip)

    return [
        name
        for name, m in net.named_modules()
        if isinstance(m, RSELayer)
        and m.conv.kernel_size == (1, 1)
        and m.conv.bias is None
        and m.conv.groups == 1
        and not skipped(name)
    ]


class QuantizedGatedConv1x1(nn.Module):
    """quint8 in, quint8 out (``scale``, ``zero_point``); see the module docstring."""

    def __init__(self, rse: nn.Module, scale: float, zero_point: int, weight_qmax: int = SAFE_WEIGHT_QMAX):
        super().__init__()
        w = rse.conv.weight.detach().float().contiguous()
        w_scale = (w.abs().amax(dim=(1, 2, 3)) / float(weight_qmax)).clamp_min(1e-12).double()
        w_zp = torch.zeros(w.shape[0], dtype=torch.long)
        # plain rounding (half to even, as torch's quantisation rounds), not the deprecated
        # quantised-tensor constructors: only the int8 values are kept
        w_int = torch.round(w.double() / w_scale.reshape(-1, 1, 1, 1)).clamp(-weight_qmax, weight_qmax)
        self.register_buffer("w_int", w_int.to(torch.int8))
        self.register_buffer("w_scale", w_scale)
        self.register_buffer("w_zp", w_zp)
        se = rse.se.se if hasattr(rse.se, "se") else rse.se  # int8_torch wraps it for tracing
        self.conv1, self.relu, self.conv2, self.gate = se.conv1, nn.ReLU(), se.conv2, se.gate
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.adaptive_avg_pool2d(x, 1).dequantize()
        weight = self.w_int.float() * self.w_scale.float().reshape(-1, 1, 1, 1)  # the int8 conv's own weights
        g = self.gate(self.conv2(self.relu(self.conv1(F.conv2d(mean, weight))))) + 1.0
        outs: list[torch.Tensor] = []
        for i in range(x.shape[0]):  # the gate differs per image, so the packed weights do
            w = torch._make_per_channel_quantized_tensor(
                self.w_int, self.w_scale * g[i].reshape(-1).double(), self.w_zp, 0
            )
            packed = torch.ops.quantized.conv2d_prepack(w, None, [1, 1], [0, 0], [1, 1], 1)
            outs.append(torch.ops.quantized.conv2d(x[i : i + 1], packed, self.scale, self.zero_point))
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def fold_gates(gm: fx.GraphModule, names, weight_qmax: int = SAFE_WEIGHT_QMAX) -> list[str]:
    """Swap each float leaf in ``names`` (dequantize -> layer -> quantize) for its int8 form.

    A layer whose neighbours are not quantized (the user kept them fp32) stays as it is.
    Returns the names folded.
    """
    folded = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in names:
            continue
        dq = node.args[0]
        quants = [u for u in node.users if u.op == "call_function" and u.target is torch.quantize_per_tensor]
        if not (
            isinstance(dq, fx.Node)
            and dq.op == "call_method"
            and dq.target == "dequantize"
            and len(quants) == 1
            and all(u.target is getattr or u in quants for u in node.users)
        ):
            continue
        q = quants[0]
        scale, zp = (getattr(gm, a.target) if isinstance(a, fx.Node) else a for a in q.args[1:3])
        layer = QuantizedGatedConv1x1(gm.get_submodule(node.target), float(scale), int(zp), weight_qmax)
        parent, _, leaf = node.target.rpartition(".")
        setattr(gm.get_submodule(parent), leaf, torch.jit.script(layer))  # traced later; the loop must stay
        node.args = (dq.args[0],)
        q.replace_all_uses_with(node)
        gm.graph.erase_node(q)
        if not dq.users:
            gm.graph.erase_node(dq)
        folded.append(node.target)
    gm.graph.lint()
    gm.recompile()
    return sorted(folded)
