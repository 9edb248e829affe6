"""Local Feature Transformer: interleaved self- and cross-attention layers (linear or full attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TransformerConfig

STACK_TOKENS = 1 << 14  # fast inference stacks the images of a self layer up to this many tokens per image
MERGED_BATCH = 2  # fast linear attention with the merge folded in runs per image: batches up to this size


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def elu_feature_map_(x: torch.Tensor) -> torch.Tensor:
    """:func:`elu_feature_map` in place (inference)."""
    return F.elu(x, inplace=True).add_(1)


def half_precision(x: torch.Tensor) -> bool:
    """True when attention products on ``x`` run in float16/bfloat16: a half tensor, or autocast to one on its
    device."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return True
    device = x.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) in (torch.float16, torch.bfloat16)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_mask: torch.Tensor | None = None,
    kv_mask: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Linear attention (Katharopoulos et al. 2020) with the elu+1 kernel.

    q (N, L, H, D), k/v (N, S, H, D), masks (N, L)/(N, S) with 1 = valid → (N, L, H, D).
    Values are divided by S before the sums, as the reference does against fp16 overflow. In float32/float64 the
    normaliser is the reference's own, ``(Q KV) / (Q . sum K + eps) * S`` in that order (the same floats as the
    official code); in half precision (half tensors or autocast) the sum of the keys over S overflows float16 at a
    few thousand tokens, so there it is ``(Q KV) / (Q . mean K + eps / S)``, the same quantity rearranged.
    """
    Q, K = elu_feature_map(q), elu_feature_map(k)
    if q_mask is not None:
        Q = Q * q_mask[:, :, None, None]
    if kv_mask is not None:
        K = K * kv_mask[:, :, None, None]
        v = v * kv_mask[:, :, None, None]
    s = v.shape[1]
    v = v / s
    kv = torch.einsum("nshd,nshv->nhdv", K, v)
    if half_precision(Q):
        z = 1.0 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1) / s) + eps / s)
        return (torch.einsum("nlhd,nhdv->nlhv", Q, kv) * z[..., None]).contiguous()
    z = 1.0 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + eps)
    return (torch.einsum("nlhd,nhdv->nlhv", Q, kv) * z[..., None] * s).contiguous()


def linear_attention_(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_mask: torch.Tensor | None = None,
    kv_mask: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """:func:`linear_attention` that overwrites q, k and v (inference): the same operations, no copies of them."""
    Q, K = elu_feature_map_(q), elu_feature_map_(k)
    if q_mask is not None:
        Q.mul_(q_mask[:, :, None, None])
    if kv_mask is not None:
        K.mul_(kv_mask[:, :, None, None])
        v.mul_(kv_mask[:, :, None, None])
    s = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", K, v.div_(s))
    if half_precision(Q):
        z = torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1).div_(s)).add_(eps / s).reciprocal_()
        return torch.einsum("nlhd,nhdv->nlhv", Q, kv).mul_(z[..., None])
    z = torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)).add_(eps).reciprocal_()
    return torch.einsum("nlhd,nhdv->nlhv", Q, kv).mul_(z[..., None]).mul_(s)


def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_mask: torch.Tensor | None = None,
    kv_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention with scale 1/sqrt(D) through SDPA. Shapes as :func:`linear_attention`.

    Padded keys are excluded; padded queries get an ordinary (ignored) output instead of the reference's NaN.
    """
    attn_mask = None
    if kv_mask is not None:
        attn_mask = kv_mask.bool()[:, None, None, :]  # (N, 1, 1, S)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask)
    return out.transpose(1, 2).contiguous()


class EncoderLayer(nn.Module):
    """One attention layer: projections, attention, merge + LayerNorm, then an MLP on [x, message] + LayerNorm."""

    def __init__(self, d_model: int, nhead: int, attention: str = "linear") -> None:
        super().__init__()
        self.nhead, self.dim = nhead, d_model // nhead
        self.attention_type = attention
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(d_model * 2, d_model * 2, bias=False), nn.ReLU(True), nn.Linear(d_model * 2, d_model, bias=False)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fast = False  # inference shortcuts, see forward

    def project(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries of x and keys/values of source: (N, L|S, H, D)."""
        n = x.shape[0]
        q = self.q_proj(x).view(n, -1, self.nhead, self.dim)
        k = self.k_proj(source).view(n, -1, self.nhead, self.dim)
        v = self.v_proj(source).view(n, -1, self.nhead, self.dim)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (N, L, C) attends to source (N, S, C) → (N, L, C).

        With ``fast`` at inference (eval mode, autograd off) the projections of one input run as one GEMM and the
        residual is added in place; the same operations otherwise.
        """
        n = x.shape[0]
        fast = self.fast and not self.training and not torch.is_grad_enabled()
        if fast:
            q, k, v = self._project_fused(x, source)
            attend = linear_attention_ if self.attention_type == "linear" else full_attention
        else:
            q, k, v = self.project(x, source)
            attend = linear_attention if self.attention_type == "linear" else full_attention
        if fast and self.attention_type == "linear" and x_mask is None and source_mask is None and n <= MERGED_BATCH:
            message = self._merged_linear_attention_(q, k, v)
        else:
            message = self.merge(attend(q, k, v, x_mask, source_mask).reshape(n, -1, self.nhead * self.dim))
        del q, k, v  # the projections' memory is free before the MLP's
        message = self.norm1(message)
        message = self.norm2(self.mlp(torch.cat([x, message], dim=2)))
        return message.add_(x) if fast else x + message

    def _merged_linear_attention_(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                  eps: float = 1e-6) -> torch.Tensor:
        """:func:`linear_attention_` followed by the merge projection (no masks; overwrites q, k, v) → (N, L, C).

        The merge is folded into each head's D×D key-value summary, ``message = (Q / z) (KV W_merge)``, and the heads
        are read through strided views: no per-head copies of q, k, v or of the attention output (one image of the
        batch at a time, so for small batches only)."""
        Q, K = elu_feature_map_(q), elu_feature_map_(k)
        n, l, h, d = Q.shape
        s, half = v.shape[1], half_precision(Q)
        v = v.div_(s)  # as the reference, against half-precision overflow of the sums over S
        merge = self.merge.weight.t().reshape(h, d, -1)  # (H, D, C): the rows of W_merge^T that each head feeds
        out = Q.new_empty((n, l, merge.shape[2]))
        for b in range(n):
            kv = torch.bmm(K[b].permute(1, 2, 0), v[b].permute(1, 0, 2))  # (H, D, D), summed over S
            queries = Q[b].reshape(l, h * d)
            if half:  # (L, H): each head's Q . mean_s K in one GEMM (the sum overflows float16)
                z = queries @ torch.block_diag(*K[b].mean(0)[:, :, None])
                Q[b].mul_(z.add_(eps / s).reciprocal_()[:, :, None])
            else:  # the reference's normaliser, (Q . sum_s K + eps)^-1 * S
                z = queries @ torch.block_diag(*K[b].sum(0)[:, :, None])
                Q[b].mul_(z.add_(eps).reciprocal_().mul_(s)[:, :, None])
            torch.mm(queries, torch.bmm(kv, merge).view(h * d, -1), out=out[b])
        return out

    def _project_fused(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`project` with the projections that read the same tokens stacked into one weight."""
        n, c = x.shape[0], x.shape[2]
        if source is x:
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            q, k, v = F.linear(x, weight).split(c, dim=2)
        else:
            q = self.q_proj(x)
            k, v = F.linear(source, torch.cat([self.k_proj.weight, self.v_proj.weight])).split(c, dim=2)
        return tuple(t.view(n, -1, self.nhead, self.dim) for t in (q, k, v))


class LocalFeatureTransformer(nn.Module):
    """A stack of :class:`EncoderLayer` named 'self' (each image with itself) or 'cross' (each with the other)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.layer_names = tuple(config.layer_names)
        self.layers = nn.ModuleList(
            EncoderLayer(config.d_model, config.nhead, config.attention) for _ in self.layer_names
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.fast = False  # inference: both images through each self layer at once (up to STACK_TOKENS each)

    def forward(
        self,
        feat0: torch.Tensor,
        feat1: torch.Tensor,
        mask0: torch.Tensor | None = None,
        mask1: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feat0 (N, L, C), feat1 (N, S, C), masks (N, L)/(N, S) → transformed features, same shapes."""
        if feat0.shape[-1] != self.config.d_model:
            raise ValueError(f"features have {feat0.shape[-1]} channels, the transformer expects {self.config.d_model}")
        stack = (self.fast and not self.training and not torch.is_grad_enabled() and feat0.shape == feat1.shape
                 and (mask0 is None) == (mask1 is None) and feat0.shape[0] * feat0.shape[1] <= STACK_TOKENS)
        both_masks = torch.cat([mask0, mask1]) if stack and mask0 is not None else None
        for layer, name in zip(self.layers, self.layer_names):
            if name == "self" and stack:  # self layers see one image at a time: one batch of 2N
                both = torch.cat([feat0, feat1])
                feat0, feat1 = layer(both, both, both_masks, both_masks).chunk(2)
            elif name == "self":
                feat0, feat1 = layer(feat0, feat0, mask0, mask0), layer(feat1, feat1, mask1, mask1)
            else:
                feat0 = layer(feat0, feat1, mask0, mask1)
                feat1 = layer(feat1, feat0, mask1, mask0)
        return feat0, feat1
