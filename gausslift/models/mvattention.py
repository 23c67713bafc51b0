"""Cross-view self-attention as a diffusers attention processor (FaceLift's multi-view attention).

The UNet runs the V views of one object as V consecutive batch rows, (B*V, L, C) with L = H*W tokens per
view. FaceLift replaces the self-attention (`attn1`) of every transformer block in the down, mid and up
blocks; the cross-attention to the per-view prompt embedding (`attn2`) stays per view. Modes:

- ``"joint"``: every view attends to the tokens of all V views of its object. Computed by regrouping
  (B*V, L, C) -> (B, V*L, C) for queries, keys and values. This is FaceLift's `MVAttnProcessor`, the path it
  takes when xformers is off (it then ignores `sparse_mv_attention`).
- ``"front"``: every view attends to the front view's (view 0) tokens followed by its own, [K_0; K_v]. This is
  FaceLift's `XFormersMVAttnProcessor` with `sparse_mv_attention=True`, the path its training and inference
  scripts take (both enable xformers; configs/mvdiffusion.yaml sets sparse_mv_attention: true).
- ``"none"``: plain per-view self-attention (`multiview_attention=False`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("joint", "front", "none")


def mode_from_config(multiview_attention: bool, sparse_mv_attention: bool) -> str:
    """The mode FaceLift's trained weights expect for these config flags (its xformers path)."""
    if not multiview_attention:
        return "none"
    return "front" if sparse_mv_attention else "joint"


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, c = x.shape
    return x.view(n, length, heads, c // heads).transpose(1, 2)


def _front(x: torch.Tensor, views: int) -> torch.Tensor:
    """Each object's view-0 rows repeated for all its views: (B*V, L, C) -> (B*V, L, C)."""
    bv, length, c = x.shape
    return x.view(bv // views, views, length, c)[:, :1].expand(-1, views, -1, -1).reshape(bv, length, c)


class MultiViewAttnProcessor:
    """Self-attention across the `num_views` views of each object; drop-in for diffusers' AttnProcessor2_0."""

    def __init__(self, num_views: int, mode: str = "joint"):
        if mode not in MODES:
            raise ValueError(f"multi-view attention mode must be one of {MODES}, got {mode!r}")
        self.num_views = int(num_views)
        self.mode = mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("multi-view attention is self-attention without a mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            n, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(n, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        bv, length, inner = q.shape
        views = self.num_views
        if self.mode != "none" and bv % views:
            raise ValueError(f"batch of {bv} rows is not a whole number of {views}-view objects")
        if self.mode == "joint":  # (B*V, L, C) -> (B, V*L, C): one sequence per object
            q, k, v = (t.reshape(bv // views, views * length, inner) for t in (q, k, v))
        elif self.mode == "front":  # keys/values [front view; own view] for every view
            k, v = (torch.cat([_front(t, views), t], dim=1) for t in (k, v))
        q, k, v = (_heads(t, attn.heads) for t in (q, k, v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        out = out.transpose(1, 2).reshape(bv, length, inner).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if four_d:
            out = out.transpose(-1, -2).reshape(n, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
