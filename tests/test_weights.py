from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from loftr import LoFTR
from loftr import weights as W
from loftr.errors import WeightsError
from loftr.matcher import build_model


@pytest.fixture(scope="module")
def tiny() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR("tiny_ds")


def _same(a: LoFTR, b: LoFTR, atol: float = 0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=atol) for k in sa)


def test_safetensors_round_trip_in_fp16(tiny: LoFTR, tmp_path: Path) -> None:
    path = W.save_safetensors(tiny, tmp_path / "t.safetensors", preset="tiny_ds")
    loaded = LoFTR("tiny_ds", weights=path)
    assert _same(tiny, loaded, atol=2e-3)
    assert next(loaded.parameters()).dtype == torch.float32
    info = W.describe(path)
    assert info["metadata"]["preset"] == "tiny_ds" and info["fits_presets"] == ["tiny_ds"]
    assert info["dtype"] == "float16"


def test_official_lightning_checkpoint_with_matcher_prefix(tiny: LoFTR, tmp_path: Path) -> None:
    state = {"matcher." + k: v for k, v in tiny.state_dict().items()}
    torch.save({"epoch": 29, "global_step": 1000, "state_dict": state, "hparams_name": "config"}, tmp_path / "o.ckpt")
    assert _same(tiny, LoFTR("tiny_ds", weights=tmp_path / "o.ckpt"))
    torch.save(tiny.state_dict(), tmp_path / "plain.pth")  # plain state dict
    assert _same(tiny, LoFTR("tiny_ds", weights=tmp_path / "plain.pth"))


def test_wrong_checkpoint_names_preset_and_keys(tmp_path: Path) -> None:
    torch.save({"state_dict": LoFTR("outdoor_ot").state_dict()}, tmp_path / "ot.ckpt")
    with pytest.raises(WeightsError) as err:
        LoFTR("outdoor_ds", weights=tmp_path / "ot.ckpt")
    msg = str(err.value)
    assert "outdoor_ds" in msg and "coarse_matching.bin_score" in msg and "unexpected" in msg
    torch.save(LoFTR("outdoor_ds").state_dict(), tmp_path / "ds.pth")
    with pytest.raises(WeightsError, match="missing keys coarse_matching.bin_score"):
        LoFTR("outdoor_ot", weights=tmp_path / "ds.pth")
    with pytest.raises(WeightsError, match="tiny_ds.*unexpected keys loftr_coarse.layers.4"):
        LoFTR("tiny_ds", weights=tmp_path / "ds.pth")
    state = LoFTR("tiny_ds").state_dict()
    state["backbone.conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch in backbone.conv1.weight \(64, 1, 7, 7\)"):
        LoFTR("tiny_ds", weights=tmp_path / "shape.pth")


def test_a_weights_file_carries_its_fine_match_filter(tiny: LoFTR, tmp_path: Path) -> None:
    assert "fine_max_std" not in W.describe(W.save_safetensors(tiny, tmp_path / "plain.safetensors",
                                                               preset="tiny_ds"))["metadata"]
    own = LoFTR("tiny_ds", config=dataclasses.replace(tiny.config, fine_max_std=0.9))
    own.load_state_dict(tiny.state_dict())
    path = W.save_safetensors(own, tmp_path / "f.safetensors", preset="tiny_ds")
    assert W.describe(path)["metadata"]["fine_max_std"] == "0.9"
    assert LoFTR("tiny_ds").config.fine_max_std is None
    assert LoFTR("tiny_ds", weights=path).config.fine_max_std == 0.9
    assert build_model(weights=path).config.fine_max_std == 0.9
    bad = W.save_safetensors(own, tmp_path / "bad.safetensors", preset="tiny_ds", extra={"fine_max_std": "-1"})
    with pytest.raises(WeightsError, match="bad.safetensors has an invalid fine_max_std"):
        LoFTR("tiny_ds", weights=bad)


def test_bundled_weights_filter_flat_fine_heat_maps() -> None:
    assert build_model("default").config.fine_max_std is not None


def test_safetensors_preset_metadata_mismatch(tiny: LoFTR, tmp_path: Path) -> None:
    path = W.save_safetensors(tiny, tmp_path / "t.safetensors", preset="tiny_ds")
    with pytest.raises(WeightsError, match="tiny_ds"):
        LoFTR("outdoor_ds", weights=path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_hostile_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": _Exploit(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError, match="refusing"):
        LoFTR("tiny_ds", weights=tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        LoFTR("tiny_ds", weights=tmp_path / "nope.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        LoFTR("tiny_ds", weights=tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="unknown weights"):
        LoFTR("tiny_ds", weights="no_such_model")


def test_cache_dir_respects_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOFTR_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert W.cache_dir() == tmp_path / "th" / "hub" / "checkpoints" / "loftr"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints" / "loftr"


@pytest.fixture
def http_server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_from_local_server_with_sha256(http_server, tiny: LoFTR, tmp_path: Path, monkeypatch) -> None:
    root, base = http_server
    src = W.save_safetensors(tiny, root / "small.safetensors", preset="tiny_ds")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setenv("LOFTR_CACHE", str(tmp_path / "cache"))
    dead = "http://127.0.0.1:9/small.safetensors"  # closed port: the first mirror fails, the second works
    good = W.Checkpoint("small", "tiny_ds", "small.safetensors", (dead, base + "small.safetensors"), digest)
    monkeypatch.setitem(W.REGISTRY, "small", good)
    path = W.download("small", progress=False)
    assert path == tmp_path / "cache" / "small.safetensors" and W.sha256_of(path) == digest
    assert _same(tiny, LoFTR("tiny_ds", weights="small"), atol=2e-3)

    bad = W.Checkpoint("small_bad", "tiny_ds", "small_bad.safetensors", (base + "small.safetensors",), "0" * 64)
    monkeypatch.setitem(W.REGISTRY, "small_bad", bad)
    with pytest.raises(WeightsError, match="sha256"):
        W.download("small_bad", progress=False)
    assert not (tmp_path / "cache" / "small_bad.safetensors").exists()


def test_offline_message_says_where_to_put_the_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOFTR_CACHE", str(tmp_path / "cache"))
    offline = W.Checkpoint("off", "outdoor_ds", "loftr_outdoor.ckpt", ("http://127.0.0.1:9/loftr_outdoor.ckpt",))
    monkeypatch.setitem(W.REGISTRY, "off", offline)
    with pytest.raises(WeightsError) as err:
        W.download("off", progress=False, timeout=2)
    assert str(tmp_path / "cache" / "loftr_outdoor.ckpt") in str(err.value)
    with pytest.raises(WeightsError, match="place it at"):
        W.download("outdoor_ot", progress=False)  # Google Drive only: no direct URL


def test_bundled_weights_code_path(monkeypatch, tiny: LoFTR, tmp_path: Path) -> None:
    W.save_safetensors(tiny, tmp_path / "tiny_ds.safetensors", preset="tiny_ds")
    monkeypatch.setattr(W, "bundled_path", lambda filename: tmp_path / filename)
    assert W.download("default") == tmp_path / "tiny_ds.safetensors"
    assert _same(tiny, LoFTR("tiny_ds", weights="default"), atol=2e-3)


def _checkpoints(tiny: LoFTR, d: Path) -> dict[str, Path]:
    """The same weights as a zip .pth, a legacy (pre-1.6) .pth and a .safetensors."""
    torch.save(tiny.state_dict(), d / "zip.pth")
    torch.save(tiny.state_dict(), d / "legacy.pth", _use_new_zipfile_serialization=False)
    W.save_safetensors(tiny, d / "st.safetensors", preset="tiny_ds")
    return {"zip": d / "zip.pth", "legacy": d / "legacy.pth", "safetensors": d / "st.safetensors"}


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_truncated_and_empty_checkpoints_name_the_file(kind: str, tiny: LoFTR, tmp_path: Path) -> None:
    good = _checkpoints(tiny, tmp_path)[kind]
    data = good.read_bytes()
    for name, content, expected in [("cut", data[: len(data) // 2], "truncated"), ("empty", b"", "is empty (0 bytes)"),
                                    ("tail", data[:-7], "truncated")]:
        bad = good.with_name(name + good.suffix)
        bad.write_bytes(content)
        with pytest.raises(WeightsError) as err:
            LoFTR("tiny_ds", weights=bad)
        assert str(bad) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


def test_text_file_as_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("these are not weights\n")
    with pytest.raises(WeightsError, match=r"cannot read .*notes.ckpt: truncated or not a PyTorch checkpoint"):
        LoFTR("tiny_ds", weights=tmp_path / "notes.ckpt")


def test_hostile_pickle_message_names_the_file_and_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": _Exploit(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError) as err:
        W.read_state_dict(tmp_path / "evil.ckpt")
    msg = str(err.value)
    assert str(tmp_path / "evil.ckpt") in msg and "Python objects other than tensors" in msg and "GLOBAL" in msg
    assert not marker.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["zip", "safetensors"])
def test_nan_or_inf_weights_are_refused_naming_the_file(kind: str, value: float, tiny: LoFTR, tmp_path: Path) -> None:
    broken = LoFTR("tiny_ds")
    broken.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        broken.loftr_coarse.layers[1].merge.weight[3, 5] = value
    path = _checkpoints(broken, tmp_path)[kind]
    with pytest.raises(WeightsError) as err:
        LoFTR("tiny_ds", weights=path)
    msg = str(err.value)
    assert str(path) in msg and "NaN or infinite" in msg and "loftr_coarse.layers.1.merge.weight" in msg
    assert W.describe(path)["non_finite_tensors"] == ["loftr_coarse.layers.1.merge.weight"]
    assert W.describe(_checkpoints(tiny, tmp_path)[kind])["non_finite_tensors"] == []


class _Serve(http.server.BaseHTTPRequestHandler):
    """Serves ``body``, announcing ``length`` bytes (more than it sends when a download is to be cut short)."""

    body = b""
    length: int | None = None

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.send_response(200)
        self.send_header("Content-Length", str(self.length if self.length is not None else len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve(monkeypatch, tmp_path: Path):
    """serve(body, length=None, sha256=None) → registry name of a checkpoint downloaded from a local server."""
    servers = []

    def start(body: bytes, length: int | None = None, sha256: str | None = None) -> str:
        handler = type("Handler", (_Serve,), {"body": body, "length": length})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}/w.safetensors"
        monkeypatch.setitem(W.REGISTRY, "served", W.Checkpoint("served", "tiny_ds", "w.safetensors", (url,), sha256))
        return "served"

    monkeypatch.setenv("LOFTR_CACHE", str(tmp_path / "cache"))
    yield start
    for server in servers:
        server.shutdown()


def test_cut_short_download_leaves_nothing_in_the_cache(serve, tiny: LoFTR, tmp_path: Path) -> None:
    body = W.save_safetensors(tiny, tmp_path / "w.safetensors", preset="tiny_ds").read_bytes()
    name = serve(body[:5000], length=len(body))
    with pytest.raises(WeightsError, match=f"incomplete download: 5000 of {len(body)} bytes"):
        W.download(name, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_that_is_no_checkpoint_is_not_kept(serve, tmp_path: Path) -> None:
    name = serve(b"<html>Sign in to the hotel wifi</html>")  # complete, no sha256 known
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        W.download(name, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_interrupted_download_leaves_nothing_in_the_cache(serve, tiny: LoFTR, tmp_path: Path, monkeypatch) -> None:
    import tqdm

    body = W.save_safetensors(tiny, tmp_path / "w.safetensors", preset="tiny_ds").read_bytes()
    name = serve(body)

    class Interrupted(tqdm.tqdm):
        def update(self, n=1):
            raise KeyboardInterrupt

    monkeypatch.setattr(tqdm, "tqdm", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        W.download(name, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_downloads_are_verified_later_against_their_recorded_sha256(serve, tiny: LoFTR, tmp_path: Path) -> None:
    body = W.save_safetensors(tiny, tmp_path / "w.safetensors", preset="tiny_ds").read_bytes()
    name = serve(body)
    path = W.download(name, progress=False)
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().strip() == hashlib.sha256(body).hexdigest()
    assert W.download(name, progress=False) == path  # cached and unchanged
    path.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # bit rot, or someone else's file
    with pytest.raises(WeightsError, match="does not match the one recorded at download"):
        W.download(name, progress=False)
    assert not path.exists() and not record.exists()
    assert W.download(name, progress=False) == path and W.sha256_of(path) == hashlib.sha256(body).hexdigest()


def test_stale_partial_downloads_are_removed(serve, tiny: LoFTR, tmp_path: Path) -> None:
    import os
    import time

    body = W.save_safetensors(tiny, tmp_path / "w.safetensors", preset="tiny_ds").read_bytes()
    name = serve(body)
    cache = tmp_path / "cache"
    cache.mkdir()
    old, live = cache / "w.safetensorsabc123.part", cache / "w.safetensorsdef456.part"
    old.write_bytes(b"killed halfway")
    live.write_bytes(b"another process is writing this")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    W.download(name, progress=False)
    assert not old.exists() and live.exists()


def test_weights_import_the_model_never_the_reverse() -> None:
    import ast

    import loftr
    from loftr import model as bare

    src = Path(loftr.__file__).parent / "model"
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "weights" not in (node.module or ""), f"{path.name} imports {node.module}"
    assert issubclass(loftr.LoFTR, bare.LoFTR)
    with pytest.raises(TypeError, match="loftr.LoFTR"):
        bare.LoFTR("tiny_ds", weights="default")
