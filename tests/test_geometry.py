"""loftr.geometry against synthetic ground truth and hand-computed metric values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from loftr import geometry as g

METHODS = ["magsac", "ransac", "lmeds"]
W, H = 640, 480
SEEDS = range(4)


@pytest.fixture(autouse=True)
def _opencv_seed() -> None:
    cv2.setRNGSeed(0)


# --------------------------------------------------------------------------------------------- synthetic data
def rotation(rng: np.random.Generator, max_deg: float = 20.0) -> np.ndarray:
    axis = rng.normal(size=3)
    angle = np.deg2rad(rng.uniform(5.0, max_deg))
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * angle)[0]


def rot_z(deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, 0.0, np.deg2rad(deg)]))[0]


def camera(rng: np.random.Generator) -> np.ndarray:
    fx, fy = 500.0 + rng.uniform(-20, 20, size=2)
    return np.array([[fx, 0, W / 2], [0, fy, H / 2], [0, 0, 1.0]])


def project(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    x = X @ K.T
    return x[:, :2] / x[:, 2:]


def inside(p: np.ndarray) -> np.ndarray:
    return (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)


def add_noise_and_outliers(rng, x0, x1, noise=0.3, outlier_ratio=0.2):
    n = len(x0)
    y0, y1 = x0 + rng.normal(0, noise, x0.shape), x1 + rng.normal(0, noise, x1.shape)
    is_inlier = rng.permutation(n) >= int(round(outlier_ratio * n))
    y1[~is_inlier] = rng.uniform([0, 0], [W, H], size=((~is_inlier).sum(), 2))
    return y0, y1, is_inlier


def two_view_scene(seed: int, n: int = 300) -> dict:
    """Two random cameras looking at random 3-D points in front of both; 0.3 px noise, 20 % outliers."""
    rng = np.random.default_rng(seed)
    K0, K1, R = camera(rng), camera(rng), rotation(rng)
    t = rng.normal(size=3)
    t /= np.linalg.norm(t)
    px = rng.uniform([0, 0], [W, H], size=(20 * n, 2))
    X0 = rng.uniform(4, 12, size=(20 * n, 1)) * (np.c_[px, np.ones(len(px))] @ np.linalg.inv(K0).T)
    X1 = X0 @ R.T + t
    keep = X1[:, 2] > 1.0
    keep[keep] = inside(project(K1, X1[keep]))
    assert keep.sum() >= n
    x0, x1 = px[keep][:n], project(K1, X1[keep][:n])
    y0, y1, is_inlier = add_noise_and_outliers(rng, x0, x1)
    return dict(K0=K0, K1=K1, R=R, t=t, clean0=x0, clean1=x1, x0=y0, x1=y1, is_inlier=is_inlier)


def random_homography(rng: np.random.Generator) -> np.ndarray:
    a, b, c, d = rng.uniform(-0.15, 0.15, size=4)
    tx, ty = rng.uniform(-40, 40, size=2)
    e, f = rng.uniform(-2e-4, 2e-4, size=2)
    return np.array([[1 + a, b, tx], [c, 1 + d, ty], [e, f, 1.0]])


def recall_precision(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    assert est.dtype == bool and est.shape == truth.shape
    hits = (est & truth).sum()
    return hits / truth.sum(), hits / max(est.sum(), 1)


# -------------------------------------------------------------------------------------------------- estimation
@pytest.mark.parametrize("method", METHODS)
def test_relative_pose_synthetic(method: str) -> None:
    for seed in SEEDS:
        s = two_view_scene(seed)
        pose = g.estimate_relative_pose(s["x0"], s["x1"], s["K0"], s["K1"], method=method)
        assert pose is not None
        assert pose.R.shape == (3, 3) and pose.t.shape == (3,) and pose.inliers.shape == (300,)
        assert np.isclose(np.linalg.norm(pose.t), 1.0) and np.isclose(np.linalg.det(pose.R), 1.0)
        err_R, err_t = g.pose_error(pose.R, pose.t, np.r_[np.c_[s["R"], s["t"]], [[0, 0, 0, 1]]])
        assert err_R < 2.0 and err_t < 5.0, (seed, err_R, err_t)
        assert np.dot(pose.t, s["t"]) > 0  # chirality picks the true sign of t, not only its direction
        # 0.5 px threshold against 0.3 px noise per coordinate: about 80 % of the true inliers are within it
        recall, precision = recall_precision(pose.inliers, s["is_inlier"])
        assert recall > 0.65 and precision > 0.95, (seed, recall, precision)


@pytest.mark.parametrize("method", METHODS)
def test_essential_synthetic(method: str) -> None:
    s = two_view_scene(10)
    res = g.estimate_essential(s["x0"], s["x1"], s["K0"], s["K1"], method=method)
    assert res is not None and res.matrix.shape == (3, 3) and res.inliers.dtype == bool
    E_gt = g.essential_from_pose(s["R"], s["t"])
    E_gt /= np.linalg.norm(E_gt)
    assert min(np.linalg.norm(res.matrix - E_gt), np.linalg.norm(res.matrix + E_gt)) < 0.1
    recall, precision = recall_precision(res.inliers, s["is_inlier"])
    assert recall > 0.65 and precision > 0.95


@pytest.mark.parametrize("method", METHODS)
def test_homography_synthetic(method: str) -> None:
    for seed in SEEDS:
        rng = np.random.default_rng(100 + seed)
        H_gt = random_homography(rng)
        x0 = rng.uniform([0, 0], [W, H], size=(1000, 2))
        x1 = g.warp_points_homography(x0, H_gt)
        keep = inside(x1)
        x0, x1 = x0[keep][:300], x1[keep][:300]
        y0, y1, is_inlier = add_noise_and_outliers(rng, x0, x1)
        res = g.estimate_homography(y0, y1, method=method)
        assert res is not None and res.matrix[2, 2] == pytest.approx(1.0)
        assert g.homography_corner_error(res.matrix, H_gt, W, H) < 2.0
        recall, precision = recall_precision(res.inliers, is_inlier)
        assert recall > 0.95 and precision > 0.95, (seed, recall, precision)


@pytest.mark.parametrize("method", METHODS)
def test_fundamental_synthetic(method: str) -> None:
    for seed in SEEDS:
        s = two_view_scene(20 + seed)
        res = g.estimate_fundamental(s["x0"], s["x1"], method=method)
        assert res is not None and res.matrix.shape == (3, 3)
        F = res.matrix
        assert g.symmetric_epipolar_distance(s["x0"], s["x1"], F)[res.inliers].mean() < 1.0
        assert g.symmetric_epipolar_distance(s["clean0"], s["clean1"], F).mean() < 1.0
        recall, precision = recall_precision(res.inliers, s["is_inlier"])
        assert recall > 0.7 and precision > 0.9, (seed, recall, precision)


def test_torch_inputs_and_non_finite_rows() -> None:
    s = two_view_scene(3)
    x0, x1 = s["x0"].copy(), s["x1"].copy()
    x0[:5] = np.nan
    pose = g.estimate_relative_pose(torch.from_numpy(x0).float(), torch.from_numpy(x1).float(),
                                    torch.from_numpy(s["K0"]), torch.from_numpy(s["K1"]))
    assert pose is not None and not pose.inliers[:5].any()
    assert g.angle_error_rotation(pose.R, s["R"]) < 2.0
    res = g.estimate_homography(torch.from_numpy(x0), torch.from_numpy(x1))
    assert res is None or (res.inliers.shape == (300,) and not res.inliers[:5].any())


@pytest.mark.parametrize("method", METHODS)
def test_too_few_points_and_degenerate(method: str) -> None:
    s = two_view_scene(4)
    x0, x1, K0, K1 = s["clean0"], s["clean1"], s["K0"], s["K1"]
    assert g.estimate_homography(x0[:3], x1[:3], method=method) is None
    assert g.estimate_fundamental(x0[:7], x1[:7], method=method) is None
    assert g.estimate_essential(x0[:4], x1[:4], K0, K1, method=method) is None
    assert g.estimate_relative_pose(x0[:4], x1[:4], K0, K1, method=method) is None
    empty = np.zeros((0, 2))
    assert g.estimate_homography(empty, empty, method=method) is None
    assert g.estimate_relative_pose(empty, empty, K0, K1, method=method) is None
    line = np.c_[np.linspace(0, 300, 30), np.linspace(10, 160, 30)]  # collinear: no geometry
    assert g.estimate_homography(line, line + 1.0, method=method) is None
    assert g.estimate_fundamental(line, 1.1 * line + 1.0, method=method) is None
    same = np.full((20, 2), 100.0)  # one point repeated: no relative pose
    assert g.estimate_relative_pose(same, same, K0, K1, method=method) is None
    for x in (g.estimate_homography(x0[:4], x1[:4], method=method),
              g.estimate_relative_pose(x0[:5], x1[:5], K0, K1, method=method)):
        assert x is None or all(np.isfinite(v).all() for v in vars(x).values())


def test_exact_minimal_five_points_candidates() -> None:
    """RANSAC on exactly five points returns several stacked E; the chirality-best one is kept."""
    s = two_view_scene(5)
    n0 = g._normalise(s["clean0"][:5], s["K0"])
    n1 = g._normalise(s["clean1"][:5], s["K1"])
    E, _ = cv2.findEssentialMat(n0, n1, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=1e-3)
    assert E.shape[0] > 3 and E.shape[0] % 3 == 0
    pose = g.estimate_relative_pose(s["clean0"][:5], s["clean1"][:5], s["K0"], s["K1"], method="ransac")
    assert pose is not None and pose.inliers.sum() == 5


def test_stacked_candidates_keep_most_chirality_inliers(monkeypatch: pytest.MonkeyPatch) -> None:
    s = two_view_scene(6)
    E_true = g.essential_from_pose(s["R"], s["t"])
    E_wrong = g.essential_from_pose(rot_z(40) @ s["R"], np.array([0.0, 1.0, 0.0]))
    n = len(s["clean0"])
    monkeypatch.setattr(cv2, "findEssentialMat",
                        lambda *a, **k: (np.vstack([E_wrong, E_true]), np.ones((n, 1), np.uint8)))
    pose = g.estimate_relative_pose(s["clean0"], s["clean1"], s["K0"], s["K1"])
    assert pose is not None and g.angle_error_rotation(pose.R, s["R"]) < 1e-6
    assert pose.inliers.all()


# ------------------------------------------------------------------------------------------------------ metrics
def test_rotation_and_translation_angles() -> None:
    R = rotation(np.random.default_rng(0))
    assert g.angle_error_rotation(np.eye(3), np.eye(3)) == pytest.approx(0.0, abs=1e-6)
    assert g.angle_error_rotation(R, R) == pytest.approx(0.0, abs=1e-5)
    assert g.angle_error_rotation(rot_z(90), np.eye(3)) == pytest.approx(90.0)
    assert g.angle_error_rotation(R @ rot_z(30), R) == pytest.approx(30.0)
    assert g.angle_error_rotation(rot_z(180), np.eye(3)) == pytest.approx(180.0)
    t = np.array([1.0, 2.0, -0.5])
    assert g.angle_error_translation(3 * t, t) == pytest.approx(0.0, abs=1e-5)
    assert g.angle_error_translation(-t, t) == pytest.approx(0.0, abs=1e-5)
    assert g.angle_error_translation([1, 0, 0], [0, 1, 0]) == pytest.approx(90.0)
    assert g.angle_error_translation(rot_z(30) @ [1, 0, 0], [1, 0, 0]) == pytest.approx(30.0)
    assert g.angle_error_translation(rot_z(150) @ [1, 0, 0], [1, 0, 0]) == pytest.approx(30.0)
    assert g.angle_error_translation([0, 0, 0], t) == 90.0 and g.angle_error_translation(t, [0, 0, 0]) == 0.0
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rot_z(10), [0, 0, 2]
    assert g.pose_error(np.eye(3), torch.tensor([0.0, 0.0, -1.0]), T) == pytest.approx((10.0, 0.0), abs=1e-5)


def test_auc_known_values() -> None:
    assert g.pose_auc(np.zeros(7)) == {5: 1.0, 10: 1.0, 20: 1.0}
    assert g.pose_auc([25.0, 30.0, np.inf, np.nan]) == {5: 0.0, 10: 0.0, 20: 0.0}
    # curve (0, 0) -> (1, 1/2) -> (3, 1), then flat: areas 0.25 + 1.5 + 2 over 5, and 0.25 + 0.5 over 2
    assert g.pose_auc([3.0, 1.0], thresholds=(2, 5)) == pytest.approx({2: 0.375, 5: 0.75})
    # failures (inf) keep the curve at 1/2: (0.125 + 0.75 + 1.0) / 5
    assert g.homography_auc([1.0, np.inf, 3.0, np.inf], thresholds=(5,)) == pytest.approx({5: 0.375})
    assert g.homography_auc([0.0, 0.0, 100.0]) == pytest.approx({3: 2 / 3, 5: 2 / 3, 10: 2 / 3})
    assert g.pose_auc([]) == {5: 0.0, 10: 0.0, 20: 0.0}


def test_auc_matches_dense_integration() -> None:
    errors = np.random.default_rng(0).exponential(8.0, size=50)
    x = np.r_[0.0, np.sort(errors)]
    y = np.linspace(0, 1, len(x))
    for thr, auc in g.pose_auc(errors).items():
        grid = np.linspace(0, thr, 400001)
        last = np.searchsorted(x, thr) - 1  # linear between errors, flat from the last error below thr
        dense = np.where(grid <= x[last], np.interp(grid, x, y), y[last]).mean()
        assert auc == pytest.approx(dense, abs=1e-4)


def test_homography_corner_error_and_warp() -> None:
    shift = np.array([[1, 0, 3.0], [0, 1, -4.0], [0, 0, 1]])
    assert g.homography_corner_error(shift, np.eye(3), W, H) == pytest.approx(5.0)
    assert g.homography_corner_error(7 * shift, shift, W, H) == pytest.approx(0.0, abs=1e-9)
    assert g.homography_corner_error(None, shift, W, H) == np.inf
    Hr = random_homography(np.random.default_rng(1))
    pts = np.random.default_rng(2).uniform(0, 500, size=(20, 2))
    expected = cv2.perspectiveTransform(pts[None], Hr)[0]
    np.testing.assert_allclose(g.warp_points_homography(torch.from_numpy(pts), 3 * Hr), expected, atol=1e-9)


def test_epipolar_distances() -> None:
    s = two_view_scene(7)
    F = g.fundamental_from_pose(s["R"], s["t"], s["K0"], s["K1"])
    assert g.symmetric_epipolar_distance(s["clean0"], s["clean1"], F).max() < 1e-8
    assert g.sampson_distance(s["clean0"], s["clean1"], 1e6 * F).max() < 1e-8
    E = g.essential_from_pose(s["R"], s["t"])
    n0, n1 = g._normalise(s["clean0"], s["K0"]), g._normalise(s["clean1"], s["K1"])
    assert np.abs(np.sum(np.c_[n1, np.ones(300)] * (np.c_[n0, np.ones(300)] @ E.T), axis=1)).max() < 1e-12
    # rectified pair: epipolar lines are the rows, so moving p1 down by d is perpendicular to its line
    F_rect = g.fundamental_from_pose(np.eye(3), [1.0, 0.0, 0.0], s["K0"], s["K0"])
    p0 = np.array([[100.0, 50.0], [300.0, 200.0], [620.0, 470.0]])
    for d in (0.0, 0.7, 3.0):
        p1 = p0 + [[-25.0, d], [-10.0, d], [-40.0, d]]
        np.testing.assert_allclose(g.symmetric_epipolar_distance(p0, p1, F_rect), d, atol=1e-9)
        np.testing.assert_allclose(g.sampson_distance(p0, p1, F_rect), d / np.sqrt(2), atol=1e-9)
    # the linear estimate from exact points equals F up to scale
    F8, _ = cv2.findFundamentalMat(s["clean0"], s["clean1"], cv2.FM_8POINT)
    F8, Fn = F8 / np.linalg.norm(F8), F / np.linalg.norm(F)
    assert min(np.linalg.norm(F8 - Fn), np.linalg.norm(F8 + Fn)) < 1e-6


def test_epipolar_error_normalized() -> None:
    s = two_view_scene(8)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = s["R"], 3.0 * s["t"]  # scale of the translation does not matter
    assert g.epipolar_error_normalized(s["clean0"], s["clean1"], T, s["K0"], s["K1"]).max() < 1e-15
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    T_rect = np.eye(4)
    T_rect[0, 3] = 1.0
    p0 = np.array([[100.0, 50.0], [300.0, 200.0]])
    p1 = p0 + [[-30.0, 5.0], [-12.0, 5.0]]  # 5 px = 0.01 normalised off the line, in both images
    np.testing.assert_allclose(g.epipolar_error_normalized(p0, p1, T_rect, K, K), 2 * 0.01**2, rtol=1e-9)


def test_reproject_with_depth() -> None:
    rng = np.random.default_rng(9)
    K0, K1, R = camera(rng), camera(rng), rotation(rng, 10.0)
    t = np.array([0.3, -0.1, 0.2])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    depth = np.full((H, W), 5.0)
    p0 = rng.uniform([0, 0], [W - 1, H - 1], size=(50, 2))
    p1, valid = g.reproject_with_depth(p0, torch.from_numpy(depth), K0, K1, torch.from_numpy(T))
    # a fronto-parallel plane Z = 5 in camera 0 induces H = K1 (R + t n^T / 5) K0^-1 with n = (0, 0, 1)
    H_plane = K1 @ (R + np.outer(t, [0, 0, 1]) / 5.0) @ np.linalg.inv(K0)
    assert valid.all()
    np.testing.assert_allclose(p1, g.warp_points_homography(p0, H_plane), atol=1e-9)
    # depth read at the rounded pixel (x=2.4 -> 2, y=3.6 -> 4); back-projection uses the exact coordinates
    ramp = 1.0 + np.arange(W)[None, :] + 10.0 * np.arange(H)[:, None]
    p1, valid = g.reproject_with_depth([[2.4, 3.6]], ramp, K0, K1, T)
    X0 = (1.0 + 2 + 40) * np.linalg.inv(K0) @ [2.4, 3.6, 1.0]
    np.testing.assert_allclose(p1[0], project(K1, (R @ X0 + t)[None])[0], atol=1e-9)
    # zero depth, outside the map, non-finite, behind camera 1: invalid and NaN
    depth[100, 200] = 0.0
    pts = np.array([[200.2, 99.8], [-3.0, 10.0], [10.0, H + 2.0], [np.nan, 5.0], [320.0, 240.0]])
    p1, valid = g.reproject_with_depth(pts, depth, K0, K1, T)
    np.testing.assert_array_equal(valid, [False, False, False, False, True])
    assert np.isnan(p1[~valid]).all() and np.isfinite(p1[valid]).all()
    T_back = np.eye(4)
    T_back[2, 3] = -10.0  # camera 1 ten units ahead: the plane at depth 5 is behind it
    assert not g.reproject_with_depth(pts, depth, K0, K1, T_back)[1].any()
