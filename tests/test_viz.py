"""Figures: the LoFTR match figure, PCA colourings of features and attention heat maps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from loftr.viz import dynamic_alpha, pca_rgb, plot_heatmaps, plot_matches, plot_pca, save_figure  # noqa: E402

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF", ".svg": b"<?xml"}


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def match_lines(fig) -> list[Line2D]:
    return [a for a in fig.get_children() if isinstance(a, Line2D)]


def pair(h0=60, w0=80, h1=50, w1=70, m=7, seed=0):
    rng = np.random.default_rng(seed)
    img0 = rng.integers(0, 60, (h0, w0), dtype=np.uint8)  # dark: white text
    img1 = rng.integers(0, 60, (h1, w1), dtype=np.uint8)
    k0 = np.stack([rng.uniform(2, w0 - 3, m), rng.uniform(2, h0 - 3, m)], 1)
    k1 = np.stack([rng.uniform(2, w1 - 3, m), rng.uniform(2, h1 - 3, m)], 1)
    conf = np.linspace(0.0, 1.0, m)
    return img0, img1, k0, k1, conf


# ----------------------------------------------------------------------------------------------------------------------
# Match figure
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".pdf", ".png", ".svg"])
def test_save_formats(tmp_path, ext):
    img0, img1, k0, k1, conf = pair()
    path = tmp_path / "sub" / "dir" / f"m{ext}"
    plot_matches(img0, img1, k0, k1, conf, path=path)
    data = path.read_bytes()
    assert len(data) > 100
    assert data.startswith(MAGIC[ext])


def test_unknown_extension(tmp_path):
    img0, img1, k0, k1, conf = pair()
    with pytest.raises(ValueError, match=r"\.pdf.*\.png.*\.svg"):
        plot_matches(img0, img1, k0, k1, conf, path=tmp_path / "m.jpg")
    fig = plot_matches(img0, img1, k0, k1, conf)
    with pytest.raises(ValueError, match="unsupported"):
        save_figure(fig, tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_text_and_counts():
    img0, img1, k0, k1, conf = pair(m=7)
    fig = plot_matches(img0, img1, k0, k1, conf)
    assert texts(fig) == ["LoFTR", "Matches: 7"]
    assert len(match_lines(fig)) == 7
    assert all(t.get_color() == "w" for t in fig.texts)  # dark image
    # Lines live on the figure, in figure coordinates, and cross from image0 (left) to image1 (right).
    for line in match_lines(fig):
        assert line.get_transform() == fig.transFigure
        x = line.get_xdata()
        assert 0 <= x[0] < 80 / (80 + 4 + 70) < x[1] <= 1

    fig = plot_matches(img0, img1, k0, k1, conf, top_k=3, text=["Extra"], title="Mine")
    assert texts(fig) == ["Mine", "Matches: 3", "Extra"]
    # the 3 most confident = the last 3 (confidence rises along the list): red end of jet
    colours = np.array([line.get_color() for line in match_lines(fig)])
    np.testing.assert_allclose(colours[:, :3], matplotlib.colormaps["jet"](conf[4:])[:, :3])


def test_zero_matches(tmp_path):
    img0, img1, _, _, _ = pair()
    fig = plot_matches(img0, img1, np.zeros((0, 2)), torch.zeros(0, 2), np.zeros(0), path=tmp_path / "z.png")
    assert texts(fig) == ["LoFTR", "Matches: 0"]
    assert match_lines(fig) == []
    assert (tmp_path / "z.png").stat().st_size > 0
    fig = plot_matches(img0, img1, *pair(m=5)[2:], top_k=0)
    assert "Matches: 0" in texts(fig)


def test_png_size_and_jet_pixels(tmp_path):
    h0, w0, h1, w1 = 60, 80, 50, 70
    img0 = np.zeros((h0, w0), np.uint8)
    img1 = np.zeros((h1, w1), np.uint8)
    # horizontal lines from the right of image0 across the gap to the left of image1; confidence 0 (blue), 1 (red)
    ys = np.array([15.0, 25.0, 35.0, 45.0])
    k0 = np.stack([np.full(4, 70.0), ys], 1)
    k1 = np.stack([np.full(4, 10.0), ys - 5], 1)
    conf = np.array([0.0, 1.0, 0.0, 1.0])
    path = tmp_path / "m.png"
    plot_matches(img0, img1, k0, k1, conf, linewidth=3.0, title=None, path=path)
    png = mpimg.imread(path)
    gap = max(4, round(0.01 * (w0 + w1)))
    assert abs(png.shape[1] - (w0 + gap + w1)) <= 2
    assert abs(png.shape[0] - max(h0, h1)) <= 2
    r, g, b = png[..., 0], png[..., 1], png[..., 2]
    blue = (b > 0.4) & (r < 0.15) & (g < 0.15)  # jet(0) = (0, 0, 0.5)
    red = (r > 0.4) & (b < 0.15) & (g < 0.15)  # jet(1) = (0.5, 0, 0)
    assert blue.sum() > 20 and red.sum() > 20
    # the lines cross the white gap between the two images
    between = slice(w0 + 1, w0 + gap - 1)
    assert blue[:, between].any() and red[:, between].any()

    # twice the dpi: twice the pixels
    plot_matches(img0, img1, k0, k1, conf, dpi=150, path=path)
    assert abs(mpimg.imread(path).shape[1] - 2 * (w0 + gap + w1)) <= 4


def test_inlier_colours(tmp_path):
    img0, img1, k0, k1, conf = pair(m=6)
    inliers = np.array([True, False, True, True, False, False])
    fig = plot_matches(img0, img1, k0, k1, conf, inliers=inliers)
    colours = np.array([line.get_color() for line in match_lines(fig)])
    np.testing.assert_allclose(colours[inliers, :3], [[0, 1, 0]] * 3)
    np.testing.assert_allclose(colours[~inliers, :3], [[1, 0, 0]] * 3)
    # explicit colours override, with their own alpha
    fig = plot_matches(img0, img1, k0, k1, conf, inliers=inliers, color=np.tile([0.0, 0.0, 1.0, 0.3], (6, 1)))
    colours = np.array([line.get_color() for line in match_lines(fig)])
    np.testing.assert_allclose(colours, [[0, 0, 1, 0.3]] * 6)
    # keypoints only: no lines
    fig = plot_matches(img0, img1, k0, k1, conf, keypoints_only=True)
    assert match_lines(fig) == [] and "Matches: 6" in texts(fig)


def test_dynamic_alpha():
    assert dynamic_alpha(0) == 1.0 and dynamic_alpha(10) > 0.99
    assert dynamic_alpha(300) == pytest.approx(0.8) and dynamic_alpha(1000) == pytest.approx(0.4)
    assert dynamic_alpha(10**6) == pytest.approx(0.2)
    assert all(dynamic_alpha(a) >= dynamic_alpha(a + 50) for a in range(0, 3000, 50))
    img0, img1, k0, k1, conf = pair(m=4)
    fig = plot_matches(img0, img1, k0, k1, conf, alpha=0.25)
    assert all(line.get_alpha() in (None, 0.25) and line.get_color()[3] == 0.25 for line in match_lines(fig))


def test_torch_inputs_and_colour_images():
    img0, img1, k0, k1, conf = pair(m=5)
    t0 = torch.from_numpy(img0).float()[None, None] / 255  # (1, 1, H, W)
    t1 = torch.rand(3, 50, 70)  # colour, channel-first
    fig = plot_matches(t0, t1, torch.from_numpy(k0), torch.from_numpy(k1), torch.from_numpy(conf).float())
    assert texts(fig) == ["LoFTR", "Matches: 5"]
    shown = [ax.get_images()[0].get_array() for ax in fig.axes]
    assert shown[0].shape == (60, 80) and shown[1].shape == (50, 70, 3)
    # a bright image gets black text
    fig = plot_matches(np.full((60, 80, 3), 250, np.uint8), img1, k0, k1, conf)
    assert all(t.get_color() == "k" for t in fig.texts)


def test_no_global_figures():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    img0, img1, k0, k1, conf = pair()
    plot_matches(img0, img1, k0, k1, conf)
    assert plt.get_fignums() == before


# ----------------------------------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------------------------------


def test_pca_rgb_shapes_range_determinism():
    g = torch.Generator().manual_seed(0)
    f0, f1 = torch.randn(16, 6, 8, generator=g), torch.randn(1, 16, 5, 7, generator=g)
    a0, a1 = pca_rgb(f0, f1)
    assert a0.shape == (6, 8, 3) and a1.shape == (5, 7, 3)
    for a in (a0, a1):
        assert a.min() >= 0.0 and a.max() <= 1.0 and np.isfinite(a).all()
    b0, b1 = pca_rgb(f0, f1)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    # numpy input gives the same
    c0, c1 = pca_rgb(f0.numpy(), f1.numpy())
    np.testing.assert_allclose(c0, a0, atol=1e-6)
    np.testing.assert_allclose(c1, a1, atol=1e-6)
    # the axes' signs are fixed (not left to the SVD): negated features give the same axes, so inverted colours
    d0, d1 = pca_rgb(-f0, -f1)
    np.testing.assert_allclose(d0, 1.0 - a0, atol=1e-5)
    np.testing.assert_allclose(d1, 1.0 - a1, atol=1e-5)


def test_pca_rgb_identical_maps():
    f = np.random.default_rng(1).normal(size=(8, 5, 6))
    a0, a1 = pca_rgb(f, f.copy())
    np.testing.assert_array_equal(a0, a1)


def test_pca_rgb_monotone_first_component():
    rng = np.random.default_rng(2)
    c, h, w = 12, 6, 10
    loading = rng.uniform(0.5, 1.5, c)
    xs = np.arange(w, dtype=np.float64)
    feat = loading[:, None, None] * xs[None, None, :] + 0.01 * rng.normal(size=(c, h, w))
    rgb0, _ = pca_rgb(torch.from_numpy(feat), feat)
    first = rgb0[..., 0]
    corr = np.corrcoef(first.reshape(-1), np.broadcast_to(xs, (h, w)).reshape(-1))[0, 1]
    assert corr > 0.95  # positive loadings: the sign fix makes it increase with x
    assert np.all(np.diff(first.mean(axis=0)) >= 0)


def test_pca_rgb_masks():
    rng = np.random.default_rng(3)
    f0, f1 = rng.normal(size=(4, 5, 5)), rng.normal(size=(4, 5, 5))
    mask0 = np.ones((5, 5), bool)
    mask0[0] = False
    a0, _ = pca_rgb(f0, f1, mask0=mask0)
    assert np.all(a0[0] == 0)
    with pytest.raises(ValueError):
        pca_rgb(f0, rng.normal(size=(3, 5, 5)))


def test_plot_pca(tmp_path):
    rng = np.random.default_rng(4)
    img0, img1 = rng.random((48, 64)), (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    coarse = pca_rgb(rng.normal(size=(8, 6, 8)), rng.normal(size=(8, 5, 7)))
    fine = pca_rgb(rng.normal(size=(8, 24, 32)), rng.normal(size=(8, 20, 28)))
    path = tmp_path / "pca.png"
    fig = plot_pca(img0, img1, {"backbone": coarse, "transformed": fine}, path=path)
    assert path.read_bytes().startswith(MAGIC[".png"])
    assert {"backbone", "transformed"} <= set(texts(fig))
    assert len(fig.axes) == 8
    # PCA maps are stretched over the image (nearest)
    im = fig.axes[1].get_images()[0]
    assert im.get_extent() == [-0.5, 63.5, 47.5, -0.5] and im.get_interpolation() == "nearest"
    plot_pca(torch.from_numpy(img0), img1, {"x": coarse}, path=tmp_path / "pca.svg")
    assert (tmp_path / "pca.svg").read_bytes().startswith(MAGIC[".svg"])


# ----------------------------------------------------------------------------------------------------------------------
# Heat maps
# ----------------------------------------------------------------------------------------------------------------------


def test_plot_heatmaps(tmp_path):
    rng = np.random.default_rng(5)
    img0, img1 = rng.random((48, 64)), rng.random((40, 56))
    path = tmp_path / "heat.pdf"
    fig = plot_heatmaps(img0, img1, rng.random((6, 8)), torch.rand(1, 5, 7), query=(20.0, 30.0), path=path)
    assert path.read_bytes().startswith(MAGIC[".pdf"])
    assert len(fig.axes) == 2
    overlay = fig.axes[0].get_images()[1]
    assert overlay.get_cmap().name == "jet" and overlay.get_alpha() == 0.5
    assert overlay.get_extent() == [-0.5, 63.5, 47.5, -0.5]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets(), [[20.0, 30.0]])

    layers0 = [rng.random((6, 8)) for _ in range(3)]
    layers1 = [rng.random((5, 7)) for _ in range(3)]
    fig = plot_heatmaps(img0, img1, layers0, layers1, query=(5, 5), titles=["self 0", "cross 0", "self 1"],
                        path=tmp_path / "layers.png")
    assert len(fig.axes) == 6
    assert {"self 0", "cross 0", "self 1"} <= set(texts(fig))
    assert (tmp_path / "layers.png").read_bytes().startswith(MAGIC[".png"])
    with pytest.raises(ValueError):
        plot_heatmaps(img0, img1, layers0, layers1[:2])
