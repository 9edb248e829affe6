"""Figures of LoFTR: the match figure, PCA colourings of feature maps and attention heat maps.

>>> from loftr.viz import plot_matches
>>> fig = plot_matches(img0, img1, m.keypoints0, m.keypoints1, m.confidence, path="matches.png")

The match figure follows the look of the official LoFTR demo figure: the two images side by side with the axes
hidden, one line per match drawn on the *figure* (so it crosses from one image to the other) and coloured by its
confidence with the ``jet`` colormap, a small dot at each keypoint in the same colour, and the lines ``LoFTR`` /
``Matches: N`` in the top-left corner of the first image.

Everything here uses matplotlib's object-oriented API on a :class:`matplotlib.figure.Figure` with an Agg canvas: no
pyplot figure is opened, no global state is touched and no backend is chosen, and matplotlib itself is only imported
when a function is called. The figures display in Jupyter as they are; in a script, save them (``path=`` or
:func:`save_figure`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FIGURE_FORMATS",
    "dynamic_alpha",
    "pca_rgb",
    "plot_heatmaps",
    "plot_matches",
    "plot_pca",
    "save_figure",
]

#: The file extensions :func:`save_figure` writes.
FIGURE_FORMATS = (".pdf", ".png", ".svg")

# Pixels of an image per inch of figure: at this dpi (the official demo's) one image pixel is one output pixel.
_BASE_DPI = 75.0

# Match-count milestones and the line alpha at each; linear in between, clamped outside (the official demo's values).
_ALPHA_MILESTONES = (0.0, 300.0, 1000.0, 2000.0)
_ALPHA_VALUES = (1.0, 0.8, 0.4, 0.2)


# ----------------------------------------------------------------------------------------------------------------------
# Conversions
# ----------------------------------------------------------------------------------------------------------------------


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "cpu")


def _numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy copy/view of a numpy array, a torch tensor (any device/dtype) or a nested sequence."""
    if _is_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point() and str(x.dtype) != "torch.float64":
            x = x.float()  # half / bfloat16 have no numpy dtype
        x = x.numpy()
    a = np.asarray(x)
    return a if dtype is None else a.astype(dtype, copy=False)


def _to_unit_range(a: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from bool, uint8 / integer (0..255) or float ([0, 1], or 0..255 when its max exceeds 1)."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a.astype(np.float32) / 255.0, 0.0, 1.0)
    a = a.astype(np.float32)
    finite = a[np.isfinite(a)]
    if finite.size and float(finite.max()) > 1.0 + 1e-3:
        a = a / 255.0
    return np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)


def _image(img: Any, name: str = "image") -> np.ndarray:
    """(H, W) grey or (H, W, 3|4) colour float32 in [0, 1] from a numpy image or a torch tensor.

    numpy: (H, W), (H, W, 1|3|4), or channel-first (1|3, H, W). torch: (H, W), (C, H, W), (1, C, H, W) with C in 1, 3.
    """
    tensor = _is_tensor(img)
    a = _numpy(img)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        channels_last = a.shape[-1] in (1, 3, 4)
        channels_first = a.shape[0] in (1, 3, 4)
        if channels_first and (tensor or not channels_last):
            a = np.moveaxis(a, 0, -1)
        if a.shape[-1] == 1:
            a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"{name}: expected (H, W), (H, W, 3), (3, H, W) or (1, 1, H, W), got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {tuple(a.shape)}")
    return _to_unit_range(a)


def _points(x: Any, name: str) -> np.ndarray:
    a = _numpy(x, np.float64)
    if a.size == 0:
        return np.zeros((0, 2), np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name}: expected (M, 2) keypoints, got shape {tuple(a.shape)}")
    return a


def _vector(x: Any, m: int, name: str, dtype: Any) -> np.ndarray:
    a = _numpy(x).reshape(-1)
    if a.shape[0] != m:
        raise ValueError(f"{name}: expected {m} values (one per match), got {a.shape[0]}")
    return a.astype(dtype, copy=False)


def _heat(x: Any, name: str) -> np.ndarray:
    a = _numpy(x, np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected an (h, w) heat map, got shape {tuple(a.shape)}")
    return a


def _rgb_map(x: Any, name: str) -> np.ndarray:
    a = _numpy(x, np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] != 3 and a.shape[0] == 3:
        a = np.moveaxis(a, 0, -1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) map, got shape {tuple(a.shape)}")
    return np.clip(np.nan_to_num(a), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Figures and saving
# ----------------------------------------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float], dpi: float) -> "Figure":
    """A standalone figure on an Agg canvas: not registered with pyplot, no backend chosen."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in FIGURE_FORMATS:
        raise ValueError(
            f"cannot save a figure as {str(p)!r}: unsupported extension {ext or '(none)'!r}; "
            f"use one of {', '.join(FIGURE_FORMATS)}"
        )
    return p


def save_figure(fig: "Figure", path: str | os.PathLike) -> Path:
    """Save ``fig`` as PDF, PNG or SVG (from the extension), tight to its content with no padding, then close it.

    The parent folders are created. Raises ValueError for any other extension. Returns the path written.
    """
    p = _check_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format=p.suffix.lower()[1:], dpi=fig.dpi, bbox_inches="tight", pad_inches=0)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # only a pyplot-managed figure needs closing; never import pyplot for it
        pyplot.close(fig)
    return p


def _hide_frame(ax: "Axes") -> None:
    """No ticks and no spines, but (unlike ``set_axis_off``) axis labels still show."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show_image(ax: "Axes", img: np.ndarray) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(img)


def _stretch(ax: "Axes", data: np.ndarray, size: tuple[int, int], **kwargs: Any) -> None:
    """imshow ``data`` stretched over an image of ``size`` = (H, W) in that image's pixel coordinates."""
    h, w = size
    ax.imshow(data, extent=(-0.5, w - 0.5, h - 0.5, -0.5), **kwargs)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


# ----------------------------------------------------------------------------------------------------------------------
# Match figure
# ----------------------------------------------------------------------------------------------------------------------


def dynamic_alpha(n_matches: int) -> float:
    """Line alpha for a figure of ``n_matches`` lines: 1 for none/few, falling linearly to 0.8 at 300, 0.4 at 1000
    and 0.2 at 2000 and beyond."""
    return float(np.interp(float(n_matches), _ALPHA_MILESTONES, _ALPHA_VALUES))


def _match_colors(
    m: int, confidence: np.ndarray | None, inliers: np.ndarray | None, color: Any
) -> tuple[np.ndarray, bool]:
    """(m, 4) RGBA: explicit ``color`` > green/red ``inliers`` > jet of ``confidence`` (1 where missing); and whether
    the alpha is the user's own (an explicit (m, 4) ``color``)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba_array

    if color is not None:
        c = _numpy(color) if _is_tensor(color) else color
        own_alpha = isinstance(c, np.ndarray) and c.ndim == 2 and c.shape[1] == 4
        rgba = to_rgba_array(c)
        if rgba.shape[0] == 1:
            rgba = np.repeat(rgba, m, axis=0)
        if rgba.shape[0] != m:
            raise ValueError(f"color: expected one colour or {m} colours (one per match), got {rgba.shape[0]}")
        return np.array(rgba, dtype=np.float64).reshape(m, 4), own_alpha
    if inliers is not None:
        return np.where(inliers[:, None], np.array([[0.0, 1.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0, 1.0]])), False
    conf = np.ones(m) if confidence is None else np.clip(np.nan_to_num(confidence), 0.0, 1.0)
    return np.array(colormaps["jet"](conf), dtype=np.float64).reshape(m, 4), False


def _auto_text_color(img: np.ndarray) -> str:
    """White on a dark top-left corner, black on a bright one (the official demo's rule, for 8-bit level 200)."""
    h, w = img.shape[:2]
    corner = img[: max(1, round(h * 100 / 480)), : max(1, round(w * 200 / 640))]
    if corner.ndim == 3:
        corner = corner[..., :3].mean(axis=-1)
    return "k" if float(corner.mean()) > 200.0 / 255.0 else "w"


def plot_matches(
    image0: Any,
    image1: Any,
    kpts0: Any,
    kpts1: Any,
    confidence: Any = None,
    *,
    color: Any = None,
    inliers: Any = None,
    text: str | Sequence[str] | None = None,
    title: str | None = "LoFTR",
    top_k: int | None = None,
    keypoints_only: bool = False,
    alpha: float | None = None,
    linewidth: float = 1.0,
    dpi: float = 75,
    path: str | os.PathLike | None = None,
    figsize: tuple[float, float] | None = None,
    text_color: str | None = None,
) -> "Figure":
    """The LoFTR match figure: both images side by side and one line per match, coloured by confidence.

    Args:
        image0, image1: numpy (H, W) / (H, W, 3) uint8 or float in [0, 1], or torch (H, W) / (1, H, W) /
            (3, H, W) / (1, 1, H, W). Grey images are shown with the ``gray`` colormap, colour ones as they are.
        kpts0, kpts1: (M, 2) matched keypoints (x, y) in pixels of image0 / image1 (numpy or torch).
        confidence: (M,) in [0, 1]; lines and dots are coloured by ``jet(confidence)`` (all 1 when not given).
        color: colours overriding everything else: one matplotlib colour or (M, 3) / (M, 4) RGB(A) in [0, 1]
            ((M, 4) keeps its alpha unless ``alpha`` is given).
        inliers: (M,) bool; inliers green and outliers red instead of the confidence colours.
        text: extra lines written under ``title`` and ``"Matches: N"`` (a string is one line).
        title: first line of the text (none when None or empty).
        top_k: draw only the ``top_k`` most confident matches (the first ``top_k`` without ``confidence``).
        keypoints_only: only the keypoint dots, no lines.
        alpha: line/dot alpha; default :func:`dynamic_alpha` of the number drawn (1 for few, 0.2 for 2000+).
        linewidth: line width in points.
        dpi: resolution. The figure is sized so that at dpi 75 (the default) one image pixel is one pixel of the
            saved PNG; a higher dpi renders the same figure at a higher resolution.
        path: when given, the figure is saved there (.pdf/.png/.svg, see :func:`save_figure`) and closed.
        figsize: (width, height) in inches, instead of the size implied by the images.
        text_color: colour of the text; default white, or black when the top-left of image0 is bright.

    Returns:
        The figure (closed when saved). Its texts are one artist per line: ``title``, ``"Matches: N"`` with N the
        number of matches drawn, then the lines of ``text``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    if path is not None:
        _check_path(path)
    img0, img1 = _image(image0, "image0"), _image(image1, "image1")
    k0, k1 = _points(kpts0, "kpts0"), _points(kpts1, "kpts1")
    if k0.shape[0] != k1.shape[0]:
        raise ValueError(f"kpts0 and kpts1 differ in length: {k0.shape[0]} vs {k1.shape[0]}")
    m = k0.shape[0]
    conf = None if confidence is None else _vector(confidence, m, "confidence", np.float64)
    inl = None if inliers is None else _vector(inliers, m, "inliers", bool)
    rgba, own_alpha = _match_colors(m, conf, inl, color)

    # The matches drawn: the top_k most confident, kept in their given order.
    keep = np.arange(m)
    if top_k is not None:
        k = max(int(top_k), 0)
        if k < m:
            keep = np.sort(np.argsort(-conf, kind="stable")[:k]) if conf is not None else keep[:k]
    k0, k1, rgba = k0[keep], k1[keep], rgba[keep]
    n = int(keep.shape[0])
    if alpha is not None:
        rgba[:, 3] = float(alpha)
    elif not own_alpha:
        rgba[:, 3] = dynamic_alpha(n)

    # Layout: image0 | gap | image1, tops aligned, one image pixel per figure pixel at the base dpi.
    h0, w0 = img0.shape[:2]
    h1, w1 = img1.shape[:2]
    gap = max(4, int(round(0.01 * (w0 + w1))))
    width, height = w0 + gap + w1, max(h0, h1)
    if figsize is None:
        figsize = (width / _BASE_DPI, height / _BASE_DPI)
    fig = _new_figure(figsize, dpi)
    ax0 = fig.add_axes((0.0, 1.0 - h0 / height, w0 / width, h0 / height))
    ax1 = fig.add_axes(((w0 + gap) / width, 1.0 - h1 / height, w1 / width, h1 / height))
    for ax, img, anchor in ((ax0, img0, "NE"), (ax1, img1, "NW")):
        _show_image(ax, img)
        ax.set_axis_off()
        ax.set_anchor(anchor)  # with another figsize: top-aligned, keeping to the gap

    if n:
        dot_size = 4.0  # points^2
        ax0.scatter(k0[:, 0], k0[:, 1], c=rgba, s=dot_size, linewidths=0, zorder=3)
        ax1.scatter(k1[:, 0], k1[:, 1], c=rgba, s=dot_size, linewidths=0, zorder=3)
        if not keypoints_only:
            for ax in (ax0, ax1):
                ax.apply_aspect()  # settle the axes boxes before reading their data transforms
            to_figure = fig.transFigure.inverted()
            f0 = to_figure.transform(ax0.transData.transform(k0))
            f1 = to_figure.transform(ax1.transData.transform(k1))
            for i in range(n):
                line = Line2D(
                    (f0[i, 0], f1[i, 0]),
                    (f0[i, 1], f1[i, 1]),
                    transform=fig.transFigure,
                    color=rgba[i],
                    linewidth=linewidth,
                )
                fig.add_artist(line)

    # Text: one artist per line, top-left of image0.
    lines = [title] if title else []
    lines.append(f"Matches: {n}")
    if text is not None:
        lines.extend([text] if isinstance(text, str) else [str(t) for t in text])
    fontsize = max(8.0, 0.035 * figsize[1] * 72.0)
    txt_color = text_color or _auto_text_color(img0)
    for i, line_text in enumerate(lines):
        transform = offset_copy(ax0.transAxes, fig=fig, x=0.0, y=-1.25 * fontsize * i, units="points")
        fig.text(
            0.01, 0.99, line_text, transform=transform, fontsize=fontsize, va="top", ha="left", color=txt_color
        )

    if path is not None:
        save_figure(fig, path)
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# PCA of feature maps
# ----------------------------------------------------------------------------------------------------------------------


def _feature_map(x: Any, name: str) -> np.ndarray:
    a = _numpy(x, np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected a (C, H, W) or (1, C, H, W) feature map, got shape {tuple(a.shape)}")
    return a


def _pixel_mask(mask: Any, size: tuple[int, int], name: str) -> np.ndarray:
    if mask is None:
        return np.ones(size[0] * size[1], dtype=bool)
    a = _numpy(mask).astype(bool)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.shape != tuple(size):
        raise ValueError(f"{name}: expected shape {tuple(size)}, got {tuple(a.shape)}")
    return a.reshape(-1)


def pca_rgb(feat0: Any, feat1: Any, mask0: Any = None, mask1: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """RGB pictures of two feature maps from their 3 principal components, fitted jointly so colours compare.

    Args:
        feat0, feat1: (C, H, W) or (1, C, H, W) feature maps (numpy or torch); the sizes may differ, C may not.
        mask0, mask1: optional (H, W) bool; only the True pixels fit the PCA and its colour range, the others
            come out black.

    The pixels of both maps are centred by their joint mean, the principal axes come from an SVD, each axis is
    signed so that its largest-magnitude loading is positive (deterministic colours), both maps are projected and
    each component is mapped to [0, 1] by the joint 1st..99th percentile range (clipped). A component with no
    spread is 0.5.

    Returns:
        (rgb0, rgb1): (H0, W0, 3) and (H1, W1, 3) float32 in [0, 1]; red/green/blue = components 1/2/3.
    """
    f0, f1 = _feature_map(feat0, "feat0"), _feature_map(feat1, "feat1")
    if f0.shape[0] != f1.shape[0]:
        raise ValueError(f"feat0 and feat1 differ in channels: {f0.shape[0]} vs {f1.shape[0]}")
    c = f0.shape[0]
    x0, x1 = f0.reshape(c, -1).T, f1.reshape(c, -1).T
    m0 = _pixel_mask(mask0, f0.shape[1:], "mask0")
    m1 = _pixel_mask(mask1, f1.shape[1:], "mask1")
    fit = np.concatenate([x0[m0], x1[m1]], axis=0)
    if fit.shape[0] == 0:
        raise ValueError("pca_rgb: the masks leave no pixel to fit")

    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = np.zeros((3, c))
    k = min(3, vt.shape[0])
    axes[:k] = vt[:k]
    pivot = np.argmax(np.abs(axes), axis=1)
    signs = np.sign(axes[np.arange(3), pivot])
    signs[signs == 0] = 1.0
    axes *= signs[:, None]

    p0, p1 = (x0 - mean) @ axes.T, (x1 - mean) @ axes.T
    joint = np.concatenate([p0[m0], p1[m1]], axis=0)
    lo, hi = np.percentile(joint, 1, axis=0), np.percentile(joint, 99, axis=0)
    span = hi - lo
    flat = span <= 1e-12 * np.maximum(1.0, np.abs(joint).max(axis=0))

    def colour(p: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        out = np.clip((p - lo) / np.where(flat, 1.0, span), 0.0, 1.0)
        out[:, flat] = 0.5
        out[~mask] = 0.0
        return out.reshape(size[0], size[1], 3).astype(np.float32)

    return colour(p0, m0, f0.shape[1:]), colour(p1, m1, f1.shape[1:])


def plot_pca(
    image0: Any,
    image1: Any,
    rgb_pairs: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike | None = None,
    *,
    dpi: float = 100,
    cell_width: float = 3.0,
) -> "Figure":
    """A grid of PCA colourings: one row per entry of ``rgb_pairs`` (e.g. ``{"backbone": ..., "transformed": ...}``),
    columns image0 / PCA of image0 / image1 / PCA of image1, the row labelled with its key.

    Each (rgb0, rgb1) is what :func:`pca_rgb` returns, (h, w, 3) in [0, 1], at any (coarse) resolution: it is shown
    stretched over the image's size with nearest-neighbour interpolation. Saved to ``path`` when given.
    """
    if path is not None:
        _check_path(path)
    if not rgb_pairs:
        raise ValueError("plot_pca: rgb_pairs is empty")
    img0, img1 = _image(image0, "image0"), _image(image1, "image1")
    size0, size1 = img0.shape[:2], img1.shape[:2]
    rows = len(rgb_pairs)
    aspect = max(size0[0] / size0[1], size1[0] / size1[1])
    fig = _new_figure((4 * cell_width, rows * cell_width * aspect + 0.4), dpi)
    axes = fig.subplots(rows, 4, squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.995, bottom=0.01, top=1.0 - 0.35 / fig.get_figheight(), wspace=0.03)
    for r, (label, pair) in enumerate(rgb_pairs.items()):
        if len(pair) != 2:
            raise ValueError(f"plot_pca: rgb_pairs[{label!r}] must be a pair (rgb0, rgb1)")
        rgb0, rgb1 = _rgb_map(pair[0], f"{label}[0]"), _rgb_map(pair[1], f"{label}[1]")
        row = axes[r]
        _show_image(row[0], img0)
        _stretch(row[1], rgb0, size0, interpolation="nearest")
        _show_image(row[2], img1)
        _stretch(row[3], rgb1, size1, interpolation="nearest")
        for ax in row:
            _hide_frame(ax)
        row[0].set_ylabel(str(label))
    for ax, name in zip(axes[0], ("image0", "PCA 0", "image1", "PCA 1")):
        ax.set_title(name, fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# Attention heat maps
# ----------------------------------------------------------------------------------------------------------------------


def _layers(heat: Any, name: str) -> list[np.ndarray | None] | None:
    """None, or the list of per-layer (h, w) maps of a single map, a list/tuple of maps or an (L, h, w) stack."""
    if heat is None:
        return None
    if isinstance(heat, (list, tuple)):
        return [None if h is None else _heat(h, f"{name}[{i}]") for i, h in enumerate(heat)]
    a = _numpy(heat, np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        return [a[i] for i in range(a.shape[0])]
    return [_heat(a, name)]


def plot_heatmaps(
    image0: Any,
    image1: Any,
    heat0: Any,
    heat1: Any,
    query: tuple[float, float] | None = None,
    titles: str | Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    *,
    query1: tuple[float, float] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    interpolation: str = "nearest",
    dpi: float = 100,
    cell_width: float = 4.0,
) -> "Figure":
    """Attention heat maps over both images: a ``jet`` overlay (alpha 0.5) and a star at the query point.

    Args:
        image0, image1: the two images (as for :func:`plot_matches`).
        heat0, heat1: (h, w) maps at any resolution (stretched over the image), or one per layer as a list or an
            (L, h, w) stack, giving one row per layer; either may be None (the image alone). Each map is scaled
            to its own min..max.
        query: (x, y) in pixels of image0, marked with a star on image0.
        titles: the row label, or one per row; default "layer i" when there are several rows.
        path: save there (.pdf/.png/.svg) when given.
        query1: an optional (x, y) in pixels of image1 to mark as well (e.g. the true correspondence).
    """
    if path is not None:
        _check_path(path)
    img0, img1 = _image(image0, "image0"), _image(image1, "image1")
    size0, size1 = img0.shape[:2], img1.shape[:2]
    l0, l1 = _layers(heat0, "heat0"), _layers(heat1, "heat1")
    if l0 is not None and l1 is not None and len(l0) != len(l1):
        raise ValueError(f"heat0 and heat1 give different numbers of layers: {len(l0)} vs {len(l1)}")
    rows = len(l0) if l0 is not None else len(l1) if l1 is not None else 1
    rows = max(rows, 1)
    l0 = l0 if l0 is not None else [None] * rows
    l1 = l1 if l1 is not None else [None] * rows
    if titles is None:
        labels: list[str | None] = [f"layer {i}" for i in range(rows)] if rows > 1 else [None]
    elif isinstance(titles, str):
        labels = [titles] if rows == 1 else [f"{titles} {i}" for i in range(rows)]
    else:
        labels = [str(t) for t in titles]
        if len(labels) != rows:
            raise ValueError(f"titles: expected {rows} labels (one per row), got {len(labels)}")

    aspect = max(size0[0] / size0[1], size1[0] / size1[1])
    fig = _new_figure((2 * cell_width + 0.3, rows * cell_width * aspect + 0.1), dpi)
    axes = fig.subplots(rows, 2, squeeze=False)
    fig.subplots_adjust(left=0.3 / fig.get_figwidth(), right=0.995, bottom=0.005, top=0.995, wspace=0.02, hspace=0.02)
    for r in range(rows):
        cells = ((axes[r][0], img0, size0, l0[r], query), (axes[r][1], img1, size1, l1[r], query1))
        for ax, img, size, heat, point in cells:
            _show_image(ax, img)
            if heat is not None:
                _stretch(ax, heat, size, cmap=cmap, alpha=alpha, interpolation=interpolation)
            if point is not None:
                ax.scatter(
                    [float(point[0])], [float(point[1])], marker="*", s=180, c="white", edgecolors="black",
                    linewidths=1.0, zorder=4,
                )
            ax.set_xlim(-0.5, size[1] - 0.5)
            ax.set_ylim(size[0] - 0.5, -0.5)
            _hide_frame(ax)
        if labels[r]:
            axes[r][0].set_ylabel(labels[r])
    if path is not None:
        save_figure(fig, path)
    return fig
