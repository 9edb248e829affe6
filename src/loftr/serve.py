"""``loftr serve``: a local web viewer. Upload two images (or pick them from a folder), choose the model, the
threshold and a geometric model, and see the match figure, the counts, and download the matches (JSON, NPZ).

A Flask app, server-rendered: one page with a form, results kept in memory (the last :data:`MAX_RESULTS`), models
loaded once per name. It listens on 127.0.0.1 unless told otherwise.

>>> app = create_app(ServeOptions(weights="tiny.safetensors"))   # a Flask app; or `loftr serve --port 8765`
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import secrets
import socket
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LoFTRError
from .io import DEFAULT_MAX_SIZE, MAX_PIXELS

log = logging.getLogger(__name__)

__all__ = ["FormError", "ServeOptions", "ModelCache", "MatchResult", "Viewer", "create_app", "run_pair", "register"]

GEOMETRIES = ("none", "homography", "fundamental")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_RESULTS = 16
MAX_UPLOAD_MB = 40
FIGURE_MIN_WIDTH = 960  # pixels: smaller pairs are drawn at a higher dpi
_FILE_PREFIX = "file:"


class FormError(LoFTRError, ValueError):
    """Bad input from the web form (shown on the page)."""


@dataclass(frozen=True)
class ServeOptions:
    """What ``loftr serve`` was started with: the default model (a registry name, or a ``weights`` file with its
    ``preset``), the resize rule, the default threshold (None: the preset's), device, dtype, the inference path
    (``fast``, the default, or the reference module), the pixel limit, test-time rotations and scales (and when to search them) and the picture folder."""

    model: str = "default"
    weights: str | None = None
    preset: str | None = None
    max_size: int | None = DEFAULT_MAX_SIZE
    resize: tuple[int, int] | None = None
    threshold: float | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    images_dir: str | None = None
    fast: bool = True
    max_pixels: int | None = MAX_PIXELS
    rotations: int = 1
    scales: tuple[float, ...] = ()
    search_below: int | None = None


class ModelCache:
    """LoFTR models loaded once per choice name: registry names found locally, plus the ``--weights`` file."""

    def __init__(self, options: ServeOptions) -> None:
        from .weights import DEFAULT

        self.options = options
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        requested = DEFAULT if options.model == "default" else options.model
        self.default = _FILE_PREFIX + Path(options.weights).name if options.weights else requested
        self._requested = requested

    def choices(self) -> list[str]:
        """The model names the page offers: the default first, then every registry entry with a local file."""
        from .weights import REGISTRY, bundled_path, cache_dir

        names = [self.default]
        for c in REGISTRY.values():
            local = bundled_path(c.filename) if c.bundled else cache_dir() / c.filename
            if c.name not in names and (local.exists() or c.name == self._requested):
                names.append(c.name)
        return names

    def get(self, name: str) -> Any:
        """The model of choice ``name`` (loaded on first use); FormError for a name not offered."""
        from .matcher import Matcher, build_model

        if name not in self.choices():
            raise FormError(f"unknown model {name!r}; choose one of {', '.join(self.choices())}")
        with self._lock:
            if name not in self._models:
                if name.startswith(_FILE_PREFIX):
                    net = build_model(weights=self.options.weights, preset=self.options.preset)
                else:
                    net = build_model(name, preset=self.options.preset if name == self._requested else None)
                log.info("loaded model %s", name)
                opts = self.options  # the fast inference copy (by default) made once, not per request
                self._models[name] = Matcher(net, device=opts.device, dtype=opts.dtype, fast=opts.fast).model
            return self._models[name]


@dataclass(frozen=True)
class MatchResult:
    """One matched pair: ``arrays`` keypoints0/1 (M, 2), confidence (M,), and inliers (M,) / matrix (3, 3) when a
    geometric model was fitted; ``figure`` the PNG bytes; ``note`` a message when the geometry failed."""

    id: str
    names: tuple[str, str]
    model: str
    threshold: float | None
    geometry: str
    arrays: dict[str, np.ndarray]
    figure: bytes
    note: str = ""

    @property
    def count(self) -> int:
        return int(self.arrays["confidence"].shape[0])

    @property
    def inliers(self) -> int | None:
        return int(self.arrays["inliers"].sum()) if "inliers" in self.arrays else None

    def to_json(self) -> str:
        data: dict[str, Any] = {"image0": self.names[0], "image1": self.names[1], "model": self.model,
                                "threshold": self.threshold, "geometry": self.geometry}
        data.update({k: v.tolist() for k, v in self.arrays.items()})
        return json.dumps(data)

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)
        return buf.getvalue()


def _fit_geometry(geometry: str, k0: np.ndarray, k1: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """Inlier mask and matrix of the chosen model, or a note saying why there are none."""
    from .geometry import estimate_fundamental, estimate_homography

    if geometry == "none":
        return {}, ""
    fit = estimate_homography(k0, k1) if geometry == "homography" else estimate_fundamental(k0, k1)
    if fit is None:
        need = 4 if geometry == "homography" else 8
        return {}, f"no {geometry} found from {len(k0)} matches (needs at least {need} consistent ones)"
    return {"inliers": fit.inliers, "matrix": fit.matrix}, ""


def run_pair(net: Any, image0: np.ndarray, image1: np.ndarray, *, names: tuple[str, str], model: str,
             threshold: float | None, geometry: str, options: ServeOptions) -> MatchResult:
    """Match two decoded images (H, W[, 3]) uint8, fit the geometry, draw the figure → a :class:`MatchResult`."""
    from .matcher import Matcher
    from .viz import plot_matches

    matcher = Matcher(net, resize=options.resize, max_size=options.max_size, threshold=threshold,
                      device=options.device, dtype=options.dtype, fast=options.fast, max_pixels=options.max_pixels,
                      rotations=options.rotations, scales=options.scales, search_below=options.search_below)
    m = matcher(image0, image1).numpy()
    m.pop("batch_indexes")
    extra, note = _fit_geometry(geometry, m["keypoints0"], m["keypoints1"])
    arrays = {**m, **extra}
    text = [f"Inliers: {int(extra['inliers'].sum())} ({geometry})"] if extra else None
    width = image0.shape[1] + image1.shape[1]
    dpi = 75.0 * min(max(FIGURE_MIN_WIDTH / width, 1.0), 4.0)  # small images: a sharper, readable figure
    fig = plot_matches(image0, image1, m["keypoints0"], m["keypoints1"], m["confidence"],
                       inliers=extra.get("inliers"), text=text, dpi=dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight", pad_inches=0)
    log.info("%s / %s with %s: %d matches", names[0], names[1], model, len(m["confidence"]))
    return MatchResult(secrets.token_hex(8), names, model, threshold, geometry, arrays, buf.getvalue(), note)


# ------------------------------------------------------------------------------------------------- form input
def _folder_images(folder: str | None) -> list[str]:
    if not folder:
        return []
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_upload(storage: Any) -> tuple[np.ndarray, str]:
    """Decode an uploaded file (werkzeug FileStorage) through :func:`loftr.io.read_image` (EXIF orientation)."""
    from werkzeug.utils import secure_filename

    from .errors import ImageError
    from .io import read_image

    name = storage.filename or "upload"
    with tempfile.TemporaryDirectory(prefix="loftr-serve-") as tmp:
        path = Path(tmp) / (secure_filename(name) or "upload")
        storage.save(path)
        try:
            return read_image(path), name
        except ImageError as exc:
            raise FormError(str(exc).replace(str(path), name)) from None


def _form_image(form: Any, files: Any, side: int, folder: str | None) -> tuple[np.ndarray, str]:
    """image{side} from its upload, else from its folder pick; FormError when neither is given."""
    from .io import read_image

    upload = files.get(f"image{side}")
    if upload is not None and upload.filename:
        return _read_upload(upload)
    pick = form.get(f"pick{side}", "")
    if pick:
        if pick not in _folder_images(folder):
            raise FormError(f"image{side}: {pick!r} is not a picture of the folder")
        return read_image(Path(folder) / pick), pick
    raise FormError(f"image{side}: upload a file{' or pick one from the folder' if folder else ''}")


def _form_threshold(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise FormError(f"threshold must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise FormError(f"threshold must be between 0 and 1, got {value:g}")
    return value


def _form_geometry(text: str) -> str:
    if text not in GEOMETRIES:
        raise FormError(f"geometric model must be one of {', '.join(GEOMETRIES)}, got {text!r}")
    return text


# ------------------------------------------------------------------------------------------------------ the app
class Viewer:
    """The state behind the app (``app.extensions["loftr"]``): options, model cache and the last results."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.models = ModelCache(options)
        self.results: OrderedDict[str, MatchResult] = OrderedDict()
        self._results_lock = threading.Lock()
        self.compute_lock = threading.Lock()  # one pair at a time: torch already uses every core

    def keep(self, result: MatchResult) -> None:
        with self._results_lock:
            self.results[result.id] = result
            while len(self.results) > MAX_RESULTS:
                self.results.popitem(last=False)

    def find(self, rid: str) -> MatchResult | None:
        with self._results_lock:
            return self.results.get(rid)


def create_app(options: ServeOptions | None = None) -> Any:
    """The Flask app of the viewer; its :class:`Viewer` state is ``app.extensions["loftr"]``."""
    try:
        from flask import Flask, Response, abort, render_template_string, request
    except ImportError:
        raise LoFTRError("the viewer needs Flask: pip install flask") from None
    from werkzeug.exceptions import RequestEntityTooLarge

    options = options or ServeOptions()
    if options.images_dir and not Path(options.images_dir).is_dir():
        raise LoFTRError(f"--images {options.images_dir} is not a folder")
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_MB * 1024 * 1024
    viewer = Viewer(options)
    app.extensions["loftr"] = viewer

    def page(result: MatchResult | None = None, error: str = "", form: Any = None, status: int = 200) -> Any:
        form = form or {}
        settings = {"model": form.get("model", viewer.models.default),
                    "threshold": form.get("threshold", "" if options.threshold is None else f"{options.threshold:g}"),
                    "geometry": form.get("geometry", "none"),
                    "pick0": form.get("pick0", ""), "pick1": form.get("pick1", "")}
        html = render_template_string(PAGE, result=result, error=error, s=settings, models=viewer.models.choices(),
                                      geometries=GEOMETRIES, pictures=_folder_images(options.images_dir),
                                      folder_name=Path(options.images_dir or ".").name, max_mb=MAX_UPLOAD_MB)
        return html, status

    def stored(rid: str) -> MatchResult:
        result = viewer.find(rid)
        if result is None:
            abort(404, description="this result is gone (the viewer keeps the last few); match the pair again")
        return result

    @app.get("/")
    def index() -> Any:
        return page()

    @app.post("/match")
    def match() -> Any:
        form = request.form
        try:
            model = form.get("model", viewer.models.default)
            threshold = _form_threshold(form.get("threshold", ""))
            geometry = _form_geometry(form.get("geometry", "none"))
            (img0, name0), (img1, name1) = (_form_image(form, request.files, i, options.images_dir) for i in (0, 1))
            net = viewer.models.get(model)
            with viewer.compute_lock:
                result = run_pair(net, img0, img1, names=(name0, name1), model=model, threshold=threshold,
                                  geometry=geometry, options=options)
        except (LoFTRError, FileNotFoundError) as exc:
            log.info("form error: %s", exc)
            return page(error=str(exc), form=form, status=400)
        viewer.keep(result)
        return page(result=result, form=form)

    @app.get("/result/<rid>/figure.png")
    def figure(rid: str) -> Any:
        return Response(stored(rid).figure, mimetype="image/png")

    @app.get("/result/<rid>/matches.<fmt>")
    def download(rid: str, fmt: str) -> Any:
        result = stored(rid)
        if fmt == "json":
            body, mime = result.to_json(), "application/json"
        elif fmt == "npz":
            body, mime = result.to_npz(), "application/octet-stream"
        else:
            abort(404, description="matches download as .json or .npz")
        name = f"matches_{Path(result.names[0]).stem}_{Path(result.names[1]).stem}.{fmt}"
        return Response(body, mimetype=mime, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception) -> Any:
        return page(error=f"the upload is too large (at most {MAX_UPLOAD_MB} MB in all)", status=413)

    return app


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LoFTR viewer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 1400px; }
 form { display: grid; grid-template-columns: max-content 1fr; gap: .5rem 1rem; align-items: center;
        background: #f4f5f7; padding: 1rem; border-radius: 6px; max-width: 760px; }
 form > * { justify-self: start; }
 .error { color: #a00; background: #fdecec; padding: .6rem .8rem; border-radius: 4px; max-width: 740px; }
 .note { color: #8a5a00; }
 .stats { font-size: 1.15rem; } .stats span { margin-right: 1.5rem; }
 img#figure { max-width: 100%; border: 1px solid #ccc; margin-top: .5rem; }
 button { padding: .4rem 1.2rem; font-size: 1rem; }
</style></head>
<body>
<h1>LoFTR viewer</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form id="match-form" method="post" action="{{ url_for('match') }}" enctype="multipart/form-data">
 {% for side in (0, 1) %}
 <label for="image{{ side }}">Image {{ side }}</label>
 <span><input type="file" id="image{{ side }}" name="image{{ side }}" accept="image/*">
 {% if pictures %} or <select name="pick{{ side }}" id="pick{{ side }}">
  <option value="">(from {{ folder_name }}/)</option>
  {% for p in pictures %}<option{% if p == s['pick%d' % side] %} selected{% endif %}>{{ p }}</option>{% endfor %}
 </select>{% endif %}</span>
 {% endfor %}
 <label for="model">Model</label>
 <select name="model" id="model">{% for m in models %}
  <option{% if m == s.model %} selected{% endif %}>{{ m }}</option>{% endfor %}</select>
 <label for="threshold">Threshold</label>
 <span><input type="number" id="threshold" name="threshold" min="0" max="1" step="any" value="{{ s.threshold }}"
  placeholder="model default"> coarse confidence, 0..1</span>
 <label for="geometry">Geometric model</label>
 <select name="geometry" id="geometry">{% for g in geometries %}
  <option{% if g == s.geometry %} selected{% endif %}>{{ g }}</option>{% endfor %}</select>
 <span></span><span><button type="submit" id="submit">Match</button> <span id="busy" hidden>matching&hellip;</span>
  <small>(uploads up to {{ max_mb }} MB)</small></span>
</form>
{% if result %}
<section id="result">
 <h2>{{ result.names[0] }} &harr; {{ result.names[1] }} <small>({{ result.model }})</small></h2>
 <p class="stats"><span id="count">Matches: {{ result.count }}</span>
 {% if result.inliers is not none %}<span id="inliers">Inliers: {{ result.inliers }} / {{ result.count }}
  ({{ result.geometry }})</span>{% endif %}
 <a id="download-json" href="{{ url_for('download', rid=result.id, fmt='json') }}" download>matches.json</a> &middot;
 <a id="download-npz" href="{{ url_for('download', rid=result.id, fmt='npz') }}" download>matches.npz</a></p>
 {% if result.note %}<p class="note" id="note">{{ result.note }}</p>{% endif %}
 <img id="figure" src="{{ url_for('figure', rid=result.id) }}"
  alt="matches of {{ result.names[0] }} and {{ result.names[1] }}">
</section>
{% endif %}
<script>
document.getElementById("match-form").addEventListener("submit", function () {
  document.getElementById("submit").disabled = true;
  document.getElementById("busy").hidden = false;
});
</script>
</body></html>
"""


# --------------------------------------------------------------------------------------------------------- CLI
def _options(args: argparse.Namespace) -> ServeOptions:
    from .options import matcher_kwargs

    kw = matcher_kwargs(args)
    return ServeOptions(model=args.model, weights=kw["weights"], preset=kw["preset"], max_size=kw["max_size"],
                        resize=kw["resize"], threshold=kw["threshold"], device=kw["device"], dtype=kw["dtype"],
                        images_dir=args.images, fast=kw["fast"], max_pixels=kw["max_pixels"],
                        rotations=kw["rotations"], scales=kw["scales"], search_below=kw["search_below"])


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; LoFTRError when that is impossible (port taken...)."""
    from werkzeug.serving import get_sockaddr, select_address_family

    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise LoFTRError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    """loftr serve: load the default model, then serve the viewer until Ctrl+C."""
    from werkzeug.serving import make_server

    options = _options(args)
    app = create_app(options)
    models = app.extensions["loftr"].models
    models.get(models.default)  # a bad --model/--weights fails now, not on the first request
    with _listening_socket(args.host, args.port) as sock:  # werkzeug would exit the process on a busy port
        server = make_server(args.host, args.port, app, threaded=True, fd=sock.fileno())
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the viewer")
    print(f"LoFTR viewer on http://{args.host}:{server.port}/ (model {models.default}; Ctrl+C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def register(sub: Any) -> None:
    """Add ``serve`` to the ``loftr`` sub-commands."""
    from .options import add_model_args

    p = sub.add_parser("serve", help="local web viewer: upload two images, see and download their matches")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--images", metavar="DIR", help="a folder of pictures to pick from on the page")
    add_model_args(p)
    p.set_defaults(func=cmd_serve)
