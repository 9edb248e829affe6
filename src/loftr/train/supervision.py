"""Ground truth for a batch of homographic pairs: coarse matches (conf_matrix_gt) and fine offsets."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CoarseSupervision:
    """Ground-truth coarse matches: pair b, cell i of image0, cell j of image1 (each (K,))."""

    b_ids: torch.Tensor
    i_ids: torch.Tensor
    j_ids: torch.Tensor
    conf_gt: torch.Tensor  # (N, L, S) float {0, 1}


def grid_points(hw: tuple[int, int], stride: int, n: int, device: torch.device) -> torch.Tensor:
    """(N, H*W, 2) pixel positions (x, y) = stride * (col, row) of the cells of a coarse map, row-major."""
    h, w = hw
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).to(torch.float64) * stride
    return pts[None].expand(n, -1, -1)


def warp(points: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """points (N, K, 2), H (N, 3, 3) → (N, K, 2); points at infinity end far outside any image."""
    homog = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ H.transpose(1, 2)
    z = homog[..., 2:]
    z = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    return homog[..., :2] / z


def _inside(points: torch.Tensor, hw: tuple[int, int], stride: int) -> torch.Tensor:
    h, w = hw
    x, y = points[..., 0] / stride, points[..., 1] / stride
    return (x > -0.5) & (y > -0.5) & (x < w - 0.5) & (y < h - 0.5)


def coarse_supervision(H_0to1: torch.Tensor, hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
                       valid1: torch.Tensor | None = None) -> CoarseSupervision:
    """Cell i of image0 matches cell j of image1 when the homography sends i's centre into j and j's centre back
    into i (mutual nearest cells, the reference's loop-back check), and j is a valid pixel of image1."""
    n = H_0to1.shape[0]
    device = H_0to1.device
    H = H_0to1.to(torch.float64)
    pts0 = grid_points(hw0, stride, n, device)
    pts1 = grid_points(hw1, stride, n, device)
    w0 = warp(pts0, H)  # (N, L, 2) in image1
    w1 = warp(pts1, torch.linalg.inv(H))  # (N, S, 2) in image0
    in1, in0 = _inside(w0, hw1, stride), _inside(w1, hw0, stride)
    j = (w0 / stride).round().long()
    j_idx = (j[..., 1].clamp(0, hw1[0] - 1) * hw1[1] + j[..., 0].clamp(0, hw1[1] - 1))
    i_back = (w1 / stride).round().long()
    i_back_idx = (i_back[..., 1].clamp(0, hw0[0] - 1) * hw0[1] + i_back[..., 0].clamp(0, hw0[1] - 1))
    loop = torch.gather(i_back_idx, 1, j_idx) == torch.arange(pts0.shape[1], device=device)[None]
    ok = in1 & torch.gather(in0, 1, j_idx) & loop
    if valid1 is not None:
        v = valid1[:, ::stride, ::stride].reshape(n, -1)
        ok &= torch.gather(v, 1, j_idx)
    b_ids, i_ids = torch.where(ok)
    j_ids = j_idx[b_ids, i_ids]
    conf_gt = torch.zeros((n, pts0.shape[1], pts1.shape[1]), device=device)
    conf_gt[b_ids, i_ids, j_ids] = 1.0
    return CoarseSupervision(b_ids, i_ids, j_ids, conf_gt)


def fine_supervision(H_0to1: torch.Tensor, b_ids: torch.Tensor, i_ids: torch.Tensor, j_ids: torch.Tensor,
                     hw0: tuple[int, int], hw1: tuple[int, int], stride_c: int, stride_f: int,
                     window: int) -> torch.Tensor:
    """(M, 2) target of the fine expectation: where image0's cell centre lands relative to image1's cell centre,
    in units of the window radius (|v| <= 1 inside the window)."""
    radius = window // 2
    x0 = torch.stack([i_ids % hw0[1], i_ids // hw0[1]], -1).to(torch.float64) * stride_c
    x1 = torch.stack([j_ids % hw1[1], j_ids // hw1[1]], -1).to(torch.float64) * stride_c
    w0 = warp(x0[:, None], H_0to1[b_ids].to(torch.float64))[:, 0]
    return ((w0 - x1) / stride_f / radius).float()
