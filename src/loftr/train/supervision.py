"""Ground truth of LoFTR training, as the reference defines it, from a geometric mapping between the two images.

Coarse: the centre of every 1/8 cell of image0 is mapped into image1 and the centre of every cell of image1 back into
image0; cell i matches cell j when i lands in j and j lands back in i (mutual nearest cells, so the match matrix is
one-to-one), both mappings being valid. Fine: for each coarse selection (i, j), where i's centre lands relative to
j's centre, in units of the fine window's radius (|offset| <= 1 inside the w×w window).

Real posed pairs (:func:`posed_coarse_supervision`) have sparse SfM tracks and exact epipolar geometry instead: the
tracks give positives, the epipolar lines negatives (cells far from each other's lines cannot match), and what is
left (near the line, no track) stays unknown.

The mapping is either a homography (:func:`coarse_supervision`) or depth + intrinsics + relative pose
(:func:`depth_coarse_supervision`, ScanNet/MegaDepth): unproject with the depth of the nearest pixel, move by
T_0to1, project; valid where the depth is known, the projection falls inside the other depth map and (the
depth-consistency check) the other view's depth there agrees with the computed depth within 20 % (so occluded
points are not matched). The reference computes that check but discards it in its coarse supervision; here it is
applied unless ``depth_check=False``, which keeps only the known-depth and inside-the-image conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FAR = 1e6  # where a cell's mapping is unknown: its fine target lies far outside any window (ignored by the loss)
EPIPOLAR_MARGIN = 1.5  # cells: a cell pair farther than this from each other's epipolar lines is a negative
FINE_TRACK_TOL = 1.5  # network pixels: a track observation this close to its cell centre gives a fine target


@dataclass(frozen=True)
class CoarseSupervision:
    """Ground-truth coarse matches: pair b, cell i of image0, cell j of image1 (each (K,)), the dense match matrix,
    and what the fine targets need: ``w_pt0_i`` (N, L, 2) where each cell centre of image0 lands in image1 and
    ``pt1_i`` (N, S, 2) the cell centres of image1, both in image1's ground-truth pixels (network pixels times
    ``scale1`` (N, 2), None meaning 1); ``w_pt0_i`` is :data:`FAR` where the mapping is unknown. ``F_0to1``
    (N, 3, 3), network pixels, where the pair's epipolar geometry is known (posed pairs): the fine stage is also
    supervised by the distance to the epipolar line where no exact target exists."""

    b_ids: torch.Tensor
    i_ids: torch.Tensor
    j_ids: torch.Tensor
    conf_gt: torch.Tensor  # (N, L, S) float: 1 match, 0 no match, -1 unknown (no loss)
    w_pt0_i: torch.Tensor | None = None
    pt1_i: torch.Tensor | None = None
    scale1: torch.Tensor | None = None
    F_0to1: torch.Tensor | None = None


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


def warp_in_front(points: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """points (N, K, 2), H (N, 3, 3) → (warped (N, K, 2), in front (N, K) bool). H is taken with det > 0 (the
    homography of a plane seen from its front side by both cameras), where w > 0 exactly for points in front of the
    second camera; a point behind it (a close-up at a grazing angle) is also mapped, mirrored, but is not seen."""
    H = torch.where(torch.linalg.det(H)[:, None, None] < 0, -H, H)
    w = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ H[:, 2:].transpose(1, 2)
    return warp(points, H), w[..., 0] > 1e-8


def _inside(points: torch.Tensor, hw: tuple[int, int], stride: int) -> torch.Tensor:
    h, w = hw
    x, y = points[..., 0] / stride, points[..., 1] / stride
    return (x > -0.5) & (y > -0.5) & (x < w - 0.5) & (y < h - 0.5)


def coarse_supervision(H_0to1: torch.Tensor, hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
                       valid1: torch.Tensor | None = None) -> CoarseSupervision:
    """Cell i of image0 matches cell j of image1 when the homography sends i's centre into j and j's centre back
    into i (mutual nearest cells, the reference's loop-back check), both centres lie in front of the other camera
    (see :func:`warp_in_front`), and j is a valid pixel of image1. Where several cells of one image land in one cell
    of the other (a zoom, strong foreshortening), only the mutual one matches: the rest are negatives of that cell,
    as in the reference. The fine targets of cells behind camera 1 are :data:`FAR`."""
    n = H_0to1.shape[0]
    device = H_0to1.device
    H = H_0to1.to(torch.float64)
    pts0 = grid_points(hw0, stride, n, device)
    pts1 = grid_points(hw1, stride, n, device)
    w0, front0 = warp_in_front(pts0, H)  # (N, L, 2) in image1
    w1, front1 = warp_in_front(pts1, torch.linalg.inv(H))  # (N, S, 2) in image0
    in1, in0 = _inside(w0, hw1, stride) & front0, _inside(w1, hw0, stride) & front1
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
    return CoarseSupervision(b_ids, i_ids, j_ids, conf_gt, torch.where(front0[..., None], w0, FAR), pts1)


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


def fine_targets(sup: CoarseSupervision, b_ids: torch.Tensor, i_ids: torch.Tensor, j_ids: torch.Tensor,
                 stride_f: int, window: int) -> torch.Tensor:
    """(M, 2) target of the fine expectation for any supervision (homography or depth): where image0's cell i lands
    relative to image1's cell j, in fine pixels of the network input over the window radius (the reference's
    ``expec_f_gt``). Selections whose mapping is unknown get targets far outside the window."""
    if sup.w_pt0_i is None or sup.pt1_i is None:
        raise ValueError("this supervision carries no warped cell positions")
    radius = window // 2
    offset = sup.w_pt0_i[b_ids, i_ids] - sup.pt1_i[b_ids, j_ids]
    scale = float(stride_f) if sup.scale1 is None else stride_f * sup.scale1[b_ids].to(offset)
    return (offset / scale / radius).float()


def _gather_map(values: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values (N, H, W) at integer pixels (N, K, 2) (x, y) → (N, K) and whether each pixel is inside (else 0)."""
    n, h, w = values.shape
    x, y = pixels[..., 0], pixels[..., 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    out = torch.gather(values.reshape(n, h * w), 1, flat)
    return torch.where(inside, out, torch.zeros_like(out)), inside


def warp_depth(points: torch.Tensor, depth0: torch.Tensor, depth1: torch.Tensor, T_0to1: torch.Tensor,
               K0: torch.Tensor, K1: torch.Tensor, depth_tol: float | None = 0.2
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Map pixels of view 0 into view 1 through depth and pose: (valid (N, K) bool, warped (N, K, 2) float64).

    points (N, K, 2) pixel positions (x, y) in the pixels of ``depth0`` (N, H0, W0) and ``K0``; depths in metres,
    0 = unknown; T_0to1 (N, 4, 4) maps camera-0 coordinates to camera-1 coordinates. A point is valid when its depth
    (nearest pixel) is known, it lands in front of camera 1 strictly inside ``depth1``, and — unless ``depth_tol``
    is None — depth1 there (nearest pixel) is known and within ``depth_tol`` (relative) of the computed depth.
    """
    pts = points.to(torch.float64)
    z0, _ = _gather_map(depth0.to(torch.float64), pts.round().long())
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) * z0[..., None]
    cam0 = homog @ torch.linalg.inv(K0.to(torch.float64)).transpose(1, 2)
    T = T_0to1.to(torch.float64)
    cam1 = cam0 @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    z1 = cam1[..., 2]
    front = z1 > 1e-6
    proj = cam1 @ K1.to(torch.float64).transpose(1, 2)
    warped = proj[..., :2] / torch.where(front, z1, torch.ones_like(z1))[..., None]
    h1, w1 = depth1.shape[-2:]
    x, y = warped[..., 0], warped[..., 1]
    covisible = front & (x > 0) & (x < w1 - 1) & (y > 0) & (y < h1 - 1)
    valid = (z0 > 0) & covisible
    if depth_tol is not None:
        d1, _ = _gather_map(depth1.to(torch.float64), torch.where(covisible[..., None], warped, 0.0).round().long())
        valid &= (d1 > 0) & ((d1 - z1).abs() < depth_tol * d1)
    return valid, warped


def coarse_cells(mask: torch.Tensor, hw: tuple[int, int], stride: int) -> torch.Tensor:
    """(N, H, W) image-resolution or (N, Hc, Wc) mask → (N, Hc*Wc) bool (a cell takes its top-left pixel)."""
    if tuple(mask.shape[-2:]) != tuple(hw):
        mask = mask[..., ::stride, ::stride][..., :hw[0], :hw[1]]
    return mask.reshape(mask.shape[0], -1).bool()


def depth_coarse_supervision(depth0: torch.Tensor, depth1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor,
                             T_0to1: torch.Tensor, hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
                             scale0: torch.Tensor | None = None, scale1: torch.Tensor | None = None,
                             mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                             depth_check: bool = True, depth_tol: float = 0.2) -> CoarseSupervision:
    """Coarse ground truth of pairs with depth (ScanNet/MegaDepth), the reference's ``spvs_coarse``.

    depth0/1 (N, h, w) metres (0 unknown) in the pixels of K0/K1 (N, 3, 3); T_0to1 (N, 4, 4); hw0/hw1 the coarse
    map sizes of the network input; ``scale0``/``scale1`` (N, 2) depth pixels per network pixel along (x, y) (None:
    the network input has the depth maps' pixels), so cell (col, row) sits at stride * (col, row) * scale in the
    depth map; ``mask0``/``mask1`` (N, H, W) valid (unpadded) pixels of the network inputs. Cells i and j match when
    each one's mapping is valid and lands in the other (mutual nearest cells); see :func:`warp_depth`.
    """
    n = depth0.shape[0]
    device = depth0.device
    T = T_0to1.to(torch.float64)
    s0 = scale0.to(device, torch.float64)[:, None] if scale0 is not None else None
    s1 = scale1.to(device, torch.float64)[:, None] if scale1 is not None else None
    pts0 = grid_points(hw0, stride, n, device)
    pts1 = grid_points(hw1, stride, n, device)
    pts0_i = pts0 * s0 if s0 is not None else pts0
    pts1_i = pts1 * s1 if s1 is not None else pts1
    tol = depth_tol if depth_check else None
    ok0, w0 = warp_depth(pts0_i, depth0, depth1, T, K0, K1, tol)
    ok1, w1 = warp_depth(pts1_i, depth1, depth0, torch.linalg.inv(T), K1, K0, tol)
    w0_c = (w0 / s1 if s1 is not None else w0) / stride
    w1_c = (w1 / s0 if s0 is not None else w1) / stride
    j = w0_c.round().long()
    i_back = w1_c.round().long()
    in1 = (j[..., 0] >= 0) & (j[..., 0] < hw1[1]) & (j[..., 1] >= 0) & (j[..., 1] < hw1[0])
    in0 = (i_back[..., 0] >= 0) & (i_back[..., 0] < hw0[1]) & (i_back[..., 1] >= 0) & (i_back[..., 1] < hw0[0])
    ok0 &= in1
    ok1 &= in0
    if mask0 is not None:
        ok0 &= coarse_cells(mask0, hw0, stride)
    if mask1 is not None:
        ok1 &= coarse_cells(mask1, hw1, stride)
    j_idx = j[..., 1].clamp(0, hw1[0] - 1) * hw1[1] + j[..., 0].clamp(0, hw1[1] - 1)
    i_back_idx = i_back[..., 1].clamp(0, hw0[0] - 1) * hw0[1] + i_back[..., 0].clamp(0, hw0[1] - 1)
    loop = torch.gather(i_back_idx, 1, j_idx) == torch.arange(pts0.shape[1], device=device)[None]
    ok = ok0 & torch.gather(ok1, 1, j_idx) & loop
    b_ids, i_ids = torch.where(ok)
    j_ids = j_idx[b_ids, i_ids]
    conf_gt = torch.zeros((n, pts0.shape[1], pts1.shape[1]), device=device)
    conf_gt[b_ids, i_ids, j_ids] = 1.0
    w_pt0_i = torch.where(ok0[..., None], w0, torch.full_like(w0, FAR))
    return CoarseSupervision(b_ids, i_ids, j_ids, conf_gt, w_pt0_i, pts1_i,
                             scale1.to(device, torch.float64) if scale1 is not None else None)


def _first_of_each(keys: torch.Tensor) -> torch.Tensor:
    """(K,) bool: True at the first occurrence of each distinct key."""
    if keys.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=keys.device)
    _, inverse = torch.unique(keys, return_inverse=True)
    order = torch.arange(keys.numel(), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), keys.numel(), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, order, reduce="amin")
    out = torch.zeros(keys.numel(), dtype=torch.bool, device=keys.device)
    out[first] = True
    return out


def _match_cells(k0: torch.Tensor, k1: torch.Tensor, valid: torch.Tensor, hw0: tuple[int, int],
                 hw1: tuple[int, int], stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coarse cells (x, y) of matched points (N, K, 2) float64: image0's cell of each first point, image1's cell
    where that cell's centre lands under the match's displacement, and which matches are valid with both cells
    inside their maps (N, K)."""
    cell0 = (k0 / stride).round().long()
    cell1 = ((k1 + cell0.to(torch.float64) * stride - k0) / stride).round().long()
    ok = valid.bool().clone()
    ok &= (cell0[..., 0] >= 0) & (cell0[..., 0] < hw0[1]) & (cell0[..., 1] >= 0) & (cell0[..., 1] < hw0[0])
    ok &= (cell1[..., 0] >= 0) & (cell1[..., 0] < hw1[1]) & (cell1[..., 1] >= 0) & (cell1[..., 1] < hw1[0])
    return cell0, cell1, ok


def match_coarse_supervision(kpts0: torch.Tensor, kpts1: torch.Tensor, valid: torch.Tensor, hw0: tuple[int, int],
                             hw1: tuple[int, int], stride: int) -> CoarseSupervision:
    """Coarse ground truth from sparse correspondences (a teacher's matches): (N, K, 2) network pixels of both
    images, ``valid`` (N, K).

    Cell i of image0 is the cell of a match's first point; its centre is moved by the match's displacement (a local
    translation) into image1, whose cell there is j. Each cell of either image keeps its first match (one-to-one).
    ``conf_gt`` is 1 at (i, j), 0 on the rest of row i and column j (a matched cell matches nothing else) and -1
    (unknown: no loss) everywhere else: cells the teacher missed may well have matches. No fine targets: every
    ``w_pt0_i`` is :data:`FAR` (a teacher's keypoints are not cell centres)."""
    n = kpts0.shape[0]
    device = kpts0.device
    k0, k1 = kpts0.to(torch.float64), kpts1.to(torch.float64)
    cell0, cell1, ok = _match_cells(k0, k1, valid, hw0, hw1, stride)
    b_ids, m_ids = torch.where(ok)
    i_ids = cell0[b_ids, m_ids, 1] * hw0[1] + cell0[b_ids, m_ids, 0]
    j_ids = cell1[b_ids, m_ids, 1] * hw1[1] + cell1[b_ids, m_ids, 0]
    l, s = hw0[0] * hw0[1], hw1[0] * hw1[1]
    keep = _first_of_each(b_ids * l + i_ids)
    b_ids, i_ids, j_ids = b_ids[keep], i_ids[keep], j_ids[keep]
    keep = _first_of_each(b_ids * s + j_ids)
    b_ids, i_ids, j_ids = b_ids[keep], i_ids[keep], j_ids[keep]
    conf_gt = torch.full((n, l, s), -1.0, device=device)
    conf_gt[b_ids, i_ids, :] = 0.0
    conf_gt[b_ids, :, j_ids] = 0.0
    conf_gt[b_ids, i_ids, j_ids] = 1.0
    w_pt0_i = torch.full((n, l, 2), FAR, dtype=torch.float64, device=device)
    return CoarseSupervision(b_ids, i_ids, j_ids, conf_gt, w_pt0_i, grid_points(hw1, stride, n, device))


def epipolar_lines(points: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """points (..., K, 2) of image0, F (..., 3, 3) → (..., K, 3) their lines in image1, (a, b) of unit length."""
    lines = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ F.transpose(-1, -2)
    return lines / lines[..., :2].norm(dim=-1, keepdim=True).clamp(min=1e-12)


def line_distance(lines: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """lines (..., L, 3) normalised, points (..., S, 2) → (..., L, S) distances of every point to every line."""
    return (lines[..., :2] @ points.transpose(-1, -2) + lines[..., 2:]).abs()


def posed_coarse_supervision(kpts0: torch.Tensor, kpts1: torch.Tensor, valid: torch.Tensor, F_0to1: torch.Tensor,
                             hw0: tuple[int, int], hw1: tuple[int, int], stride: int,
                             margin: float = EPIPOLAR_MARGIN, fine_tol: float = FINE_TRACK_TOL) -> CoarseSupervision:
    """Coarse (and fine) ground truth of real pairs with SfM tracks and known cameras.

    kpts0/kpts1 (N, K, 2) network pixels of the shared track observations, ``valid`` (N, K), F_0to1 (N, 3, 3) with
    p1^T F p0 = 0 in network pixels. ``conf_gt``:

    * 0 (negative) where cell centre j lies farther than ``margin`` cells from the epipolar line of cell centre i,
      or i from the line of j: the true match of i's centre lies on its line, and inside cell j (at most 0.71 cells
      from j's centre) if they match;
    * 1 (positive) at the tracks, cell i of the observation in image0 to the cell where i's centre lands under the
      track's local translation (as :func:`match_coarse_supervision`); each cell keeps the observation nearest its
      centre, one-to-one, and the rest of its row and column are 0; a track that contradicts the epipolar geometry
      (an SfM outlier) is dropped;
    * -1 (unknown) elsewhere: near the epipolar line with no track.

    Fine targets (``w_pt0_i``) at positive cells whose observation lies within ``fine_tol`` pixels of the cell
    centre: the track's translation of the centre, projected onto the centre's epipolar line; :data:`FAR` elsewhere.
    """
    n, k = kpts0.shape[:2]
    device = kpts0.device
    F = F_0to1.to(device, torch.float64)
    pts0, pts1 = grid_points(hw0, stride, n, device), grid_points(hw1, stride, n, device)
    l, s = pts0.shape[1], pts1.shape[1]
    conf_gt = torch.full((n, l, s), -1.0, device=device)
    far = torch.zeros((n, l, s), dtype=torch.bool, device=device)
    for b in range(n):  # one pair at a time: two (L, S) float64 maps
        d1 = line_distance(epipolar_lines(pts0[b], F[b]), pts1[b])
        d0 = line_distance(epipolar_lines(pts1[b], F[b].T), pts0[b]).T
        far[b] = torch.maximum(d0, d1) > margin * stride
    conf_gt[far] = 0.0
    k0, k1 = kpts0.to(torch.float64), kpts1.to(torch.float64)
    cell0, cell1, ok = _match_cells(k0, k1, valid, hw0, hw1, stride)
    off = (k0 - cell0.to(torch.float64) * stride).norm(dim=-1)  # (N, K) observation to its cell centre
    b_ids, m_ids = torch.where(ok)
    order = torch.argsort(off[b_ids, m_ids], stable=True)
    b_ids, m_ids = b_ids[order], m_ids[order]
    i_ids = cell0[b_ids, m_ids, 1] * hw0[1] + cell0[b_ids, m_ids, 0]
    j_ids = cell1[b_ids, m_ids, 1] * hw1[1] + cell1[b_ids, m_ids, 0]
    keep = ~far[b_ids, i_ids, j_ids]
    b_ids, m_ids, i_ids, j_ids = b_ids[keep], m_ids[keep], i_ids[keep], j_ids[keep]
    keep = _first_of_each(b_ids * l + i_ids)  # one observation per cell of image0 (the nearest its centre) ...
    b_ids, m_ids, i_ids, j_ids = b_ids[keep], m_ids[keep], i_ids[keep], j_ids[keep]
    keep = _first_of_each(b_ids * s + j_ids)  # ... and per cell of image1
    b_ids, m_ids, i_ids, j_ids = b_ids[keep], m_ids[keep], i_ids[keep], j_ids[keep]
    conf_gt[b_ids, i_ids, :] = 0.0
    conf_gt[b_ids, :, j_ids] = 0.0
    conf_gt[b_ids, i_ids, j_ids] = 1.0
    w_pt0_i = torch.full((n, l, 2), FAR, dtype=torch.float64, device=device)
    near = off[b_ids, m_ids] <= fine_tol
    b, m, i = b_ids[near], m_ids[near], i_ids[near]
    centre = pts0[b, i]
    moved = k1[b, m] + centre - k0[b, m]
    line = epipolar_lines(centre[:, None], F[b])[:, 0]  # (M, 3)
    along = (line[:, :2] * moved).sum(-1) + line[:, 2]
    w_pt0_i[b, i] = moved - along[:, None] * line[:, :2]
    return CoarseSupervision(b_ids, i_ids, j_ids, conf_gt, w_pt0_i, pts1, None, F)
