"""Realistic appearance changes between two views of real photos: what changes when a scene is photographed again
(another exposure, white balance, camera response, a shadow, hand shake, sensor noise, JPEG), as opposed to the
global brightness/contrast jitter of :func:`~loftr.train.data.photometric`.

:func:`appearance` works on one BGR crop and returns the grey network input; each view of a pair gets its own draw.
Geometry is never touched: correspondences stay exact.
"""

from __future__ import annotations

import cv2
import numpy as np


def _colour_temperature(rng: np.random.Generator, bgr: np.ndarray) -> np.ndarray:
    """White balance off by a random warm/cool shift and a green/magenta tint (per-channel gains)."""
    warm, tint = rng.uniform(-0.25, 0.25), rng.uniform(-0.08, 0.08)
    gains = np.array([1.0 - warm, 1.0 + tint, 1.0 + warm], np.float32)
    return bgr * gains


def _shadow(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """A soft-edged dark region (a random polygon, blurred) multiplies the image by 0.35-0.8 inside it."""
    h, w = grey.shape
    centre = rng.uniform((0, 0), (w, h))
    n = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.15, 0.6, n) * max(h, w)
    poly = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [poly.round().astype(np.int32)], 1.0)
    k = int(rng.integers(1, 12)) * 2 + 1
    mask = cv2.GaussianBlur(mask, (k, k), 0)
    return grey * (1.0 - mask * rng.uniform(0.2, 0.65))


def _blur(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """Defocus (Gaussian) or hand-shake (a short line kernel at a random angle)."""
    if rng.random() < 0.5:
        return cv2.GaussianBlur(grey, (0, 0), rng.uniform(0.5, 1.5))
    length = int(rng.integers(3, 8))
    kernel = np.zeros((length, length), np.float32)
    a = rng.uniform(0, np.pi)
    c = (length - 1) / 2
    d = np.cos(a) * c, np.sin(a) * c
    cv2.line(kernel, (round(c - d[0]), round(c - d[1])), (round(c + d[0]), round(c + d[1])), 1.0, 1)
    return cv2.filter2D(grey, -1, kernel / kernel.sum())


def _noise(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """Shot noise (variance proportional to the signal) plus read noise."""
    shot, read = rng.uniform(0.0, 0.03), rng.uniform(0.0, 0.015)
    sigma = np.sqrt(shot ** 2 * np.clip(grey, 0, 1) + read ** 2)
    return grey + rng.standard_normal(grey.shape).astype(np.float32) * sigma


def _jpeg(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """A JPEG round trip at quality 25-90."""
    ok, buf = cv2.imencode(".jpg", (np.clip(grey, 0, 1) * 255).round().astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 91))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0 if ok else grey


def appearance(rng: np.random.Generator, bgr: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """A (H, W, 3) uint8 BGR crop → (H, W) float32 grey in [0, 1] with a random realistic appearance change.

    ``strength`` 0 gives the plain grey image; 1 the full ranges (exposure ±1 stop, gamma 0.6-1.6, white balance,
    a shadow 40 % of the time, blur 35 %, noise, JPEG 40 %)."""
    img = bgr.astype(np.float32) / 255.0
    if strength <= 0:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    img = _colour_temperature(rng, img) if rng.random() < 0.7 * strength else img
    grey = cv2.cvtColor(np.clip(img, 0, 1), cv2.COLOR_BGR2GRAY)
    grey = grey * 2.0 ** (rng.uniform(-1.0, 1.0) * strength)  # exposure
    grey = np.clip(grey, 0, 1) ** np.exp(rng.uniform(-0.5, 0.5) * strength)  # camera response
    if rng.random() < 0.4 * strength:
        grey = _shadow(rng, grey)
    if rng.random() < 0.35 * strength:
        grey = _blur(rng, grey)
    grey = _noise(rng, grey)
    if rng.random() < 0.4 * strength:
        grey = _jpeg(rng, grey)
    return np.clip(grey, 0, 1).astype(np.float32)


def _moved_light(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """The light comes from elsewhere: a smooth gain field (a linear ramp plus two to four soft blobs, 0.2-1.8x)
    multiplies the view, so regions swap which is bright and which is dark."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / max(w, h), yy / max(w, h)
    a = rng.uniform(0, 2 * np.pi)
    field = rng.uniform(-1.0, 1.0) * (np.cos(a) * (xx - xx.mean()) + np.sin(a) * (yy - yy.mean())) * 2
    for _ in range(int(rng.integers(2, 5))):
        cx, cy, r = rng.uniform(0, w / max(w, h)), rng.uniform(0, h / max(w, h)), rng.uniform(0.15, 0.5)
        field = field + rng.uniform(-1.0, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    gain = np.exp(np.clip(field, -1.6, 0.6))  # 0.2-1.8x
    return grey * gain.astype(np.float32)


def _night(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """Night or a dim interior: 2.5-5 stops less light, read and shot noise at that level, then the camera's gain
    and a steep response bring it back (crushed blacks, amplified noise); a few lamps saturate small regions."""
    stops = rng.uniform(2.5, 5.0)
    dark = np.clip(grey, 0, 1) * 2.0 ** -stops
    sigma = np.sqrt(rng.uniform(0.002, 0.01) ** 2 * dark + rng.uniform(0.001, 0.004) ** 2)
    dark = dark + rng.standard_normal(grey.shape).astype(np.float32) * sigma
    h, w = grey.shape
    for _ in range(int(rng.integers(0, 4))):  # lamps: small, bright, blurred
        lamp = np.zeros((h, w), np.float32)
        cv2.circle(lamp, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(2, 8)), 1.0, -1)
        dark = dark + cv2.GaussianBlur(lamp, (0, 0), rng.uniform(3, 12)) * rng.uniform(0.2, 1.0)
    lifted = np.clip(dark * 2.0 ** (stops * rng.uniform(0.6, 1.0)), 0, 1)
    return lifted ** rng.uniform(0.7, 1.6)


def _other_sensor(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """Another sensor (thermal or near-infrared against visible): intensities pass a random non-monotonic tone curve
    (six knots, so some edges keep their sign, some flip and some fade), a smooth field stands for surfaces at other
    temperatures, and the lower resolution of such sensors blurs the view (sigma 0.7-2 px)."""
    knots = np.linspace(0, 1, 6)
    curve = rng.uniform(0, 1, 6)
    curve[int(rng.integers(6))] = rng.choice([0.0, 1.0])  # the curve spans most of the range
    out = np.interp(np.clip(grey, 0, 1), knots, curve).astype(np.float32)
    h, w = grey.shape
    field = cv2.resize(rng.uniform(-0.25, 0.25, (3, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(out + field, (0, 0), rng.uniform(0.7, 2.0))


def relight(rng: np.random.Generator, grey: np.ndarray) -> np.ndarray:
    """A strong illumination or sensor change of one (H, W) float32 grey view in [0, 1] (WxBS's lighting and
    sensor pairs, day to night included): the light moves (:func:`_moved_light`, 50 %), night falls
    (:func:`_night`, 35 %) or another sensor sees the view (:func:`_other_sensor`, 15 %). Geometry is never
    touched."""
    kind = rng.random()
    out = _moved_light(rng, grey) if kind < 0.5 else _night(rng, grey) if kind < 0.85 else _other_sensor(rng, grey)
    return np.clip(out, 0, 1).astype(np.float32)
