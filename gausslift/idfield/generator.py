"""A small StyleGAN2-like generator in functional style: parameters are a dict of tensors, every function
is pure. ``code`` [B,Z] -> mapping MLP -> style ``w`` [B,W] -> a learned constant [C0,r0,r0], then per
resolution a bilinear 2x upsample and two 3x3 modulated convolutions with weight demodulation (Karras et
al. 2020, eq. 1-3), leaky ReLU; a final 1x1 modulated convolution without demodulation ("toRGB") gives
``out`` channels at ``res`` x ``res``, plus a learned bias map (the mean field, so that the codes only
carry what differs between identities). Equalised learning rate: weights are stored N(0, 1) and scaled
by 1/sqrt(fan_in) when used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LRELU = 0.2
GAIN = math.sqrt(2.0)


def init_generator(code_dim: int, w_dim: int, map_layers: int, channels: list[int], const_res: int,
                   res: int, out: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Fresh parameters. ``channels[i]`` is the width at resolution ``const_res * 2**i``; the number of
    upsamplings is ``log2(res / const_res)`` and must equal ``len(channels) - 1``."""
    ups = int(round(math.log2(res / const_res)))
    if const_res * 2 ** ups != res or len(channels) != ups + 1:
        raise ValueError(f"res {res} must be const_res {const_res} * 2**(len(channels) - 1)")
    g = generator

    def rn(*shape):
        return torch.randn(*shape, generator=g)

    P: dict[str, Tensor] = {}
    d = code_dim
    for i in range(map_layers):
        P[f"map{i}.w"], P[f"map{i}.b"] = rn(w_dim, d), torch.zeros(w_dim)
        d = w_dim
    P["const"] = rn(channels[0], const_res, const_res)
    cin = channels[0]
    for i, c in enumerate(channels):
        for j in range(2 if i > 0 else 1):
            k = f"b{i}.{j}"
            P[k + ".w"], P[k + ".b"] = rn(c, cin, 3, 3), torch.zeros(c)
            P[k + ".aff.w"], P[k + ".aff.b"] = rn(cin, w_dim), torch.ones(cin)
            cin = c
    P["out.w"], P["out.b"] = rn(out, cin, 1, 1), torch.zeros(out)
    P["out.aff.w"], P["out.aff.b"] = rn(cin, w_dim), torch.ones(cin)
    P["bias_map"] = torch.zeros(out, res, res)
    return P


def num_blocks(P: dict[str, Tensor]) -> int:
    return 1 + max(int(k[1:].split(".")[0]) for k in P if k[0] == "b" and k[1].isdigit())


def mapping(P: dict[str, Tensor], code: Tensor) -> Tensor:
    """Code [B,Z] -> style [B,W]: pixel-norm, then the MLP (equalised lr, leaky ReLU)."""
    x = code * torch.rsqrt((code * code).mean(-1, keepdim=True) + 1e-8)
    i = 0
    while f"map{i}.w" in P:
        w = P[f"map{i}.w"]
        x = F.leaky_relu(F.linear(x, w / math.sqrt(w.shape[1]), P[f"map{i}.b"]), LRELU) * GAIN
        i += 1
    return x


def modconv(x: Tensor, weight: Tensor, style: Tensor, demod: bool = True) -> Tensor:
    """Modulated convolution of ``x`` [B,Cin,H,W] with ``weight`` [Cout,Cin,k,k] scaled per sample by
    ``style`` [B,Cin]; demodulated so that every output channel has unit expected variance. One grouped
    convolution for the batch."""
    B, Cin, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    w = weight[None] / math.sqrt(Cin * kh * kw) * style[:, None, :, None, None]  # [B,Cout,Cin,k,k]
    if demod:
        w = w * torch.rsqrt((w * w).sum((2, 3, 4), keepdim=True) + 1e-8)
    y = F.conv2d(x.reshape(1, B * Cin, H, W), w.reshape(B * Cout, Cin, kh, kw), padding=kh // 2, groups=B)
    return y.reshape(B, Cout, H, W)


def _style(P: dict[str, Tensor], key: str, w: Tensor) -> Tensor:
    a = P[key + ".aff.w"]
    return F.linear(w, a / math.sqrt(a.shape[1]), P[key + ".aff.b"])


def synthesis(P: dict[str, Tensor], w: Tensor) -> Tensor:
    """Style [B,W] -> attribute maps [B,out,res,res]."""
    B = w.shape[0]
    x = P["const"][None].expand(B, -1, -1, -1)
    for i in range(num_blocks(P)):
        if i > 0:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        j = 0
        while f"b{i}.{j}.w" in P:
            k = f"b{i}.{j}"
            x = modconv(x, P[k + ".w"], _style(P, k, w)) + P[k + ".b"][None, :, None, None]
            x = F.leaky_relu(x, LRELU) * GAIN
            j += 1
    y = modconv(x, P["out.w"], _style(P, "out", w), demod=False) + P["out.b"][None, :, None, None]
    return y + P["bias_map"][None]


def generate(P: dict[str, Tensor], code: Tensor) -> Tensor:
    """Code [B,Z] -> attribute maps [B,out,res,res]."""
    return synthesis(P, mapping(P, code))
