from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from loftr import LoFTR, Matcher
from loftr.cli import main
from loftr.config import get_preset
from loftr.inspect import (QueryError, attention_maps, attention_weights, coarse_features, coarse_inputs,
                           query_cell, trace_transformer)
from loftr.model.transformer import elu_feature_map, full_attention, linear_attention

from .conftest import photo


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random grey image (H, W) uint8, so the backbone sees structure rather than pixel noise."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 1, max(h // 8, 2), max(w // 8, 2), generator=g)
    big = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (big[0, 0].numpy() * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> LoFTR:
    torch.manual_seed(0)
    return LoFTR("tiny_ds")


@pytest.fixture(scope="module")
def pair(model: LoFTR):
    """Two prepared images of different sizes, both padded (150x100 → 152x104, 90x130 → 96x136)."""
    matcher = Matcher(model, max_size=None)
    p0, p1 = matcher.prepare(_texture(100, 150, 1)), matcher.prepare(_texture(130, 90, 2))
    assert p0.mask is not None and p1.mask is not None
    return p0, p1


def _unflat(mask: torch.Tensor | None, hw: tuple[int, int]) -> torch.Tensor | None:
    return None if mask is None else mask.view(1, *hw)


@pytest.mark.parametrize("same_size", [False, True])
def test_layer_by_layer_replay_reproduces_transform_coarse_exactly(model: LoFTR, pair, same_size: bool) -> None:
    p0, p1 = pair
    if same_size:  # the backbone then runs once on the stacked pair
        p1 = Matcher(model, max_size=None).prepare(_texture(100, 150, 3))
    inp = coarse_inputs(model, p0, p1)
    out0, out1, steps = trace_transformer(model.loftr_coarse, inp.tokens0, inp.tokens1, inp.mask0, inp.mask1)
    ref0, ref1 = model.transform_coarse(inp.backbone0, inp.backbone1, _unflat(inp.mask0, inp.hw0),
                                        _unflat(inp.mask1, inp.hw1))
    assert torch.equal(out0, ref0) and torch.equal(out1, ref1)
    run = model.run(p0.image, p1.image, p0.mask, p1.mask)
    assert torch.equal(out0, run.feat_c0) and torch.equal(out1, run.feat_c1)
    assert [s.name for s in steps] == list(model.loftr_coarse.layer_names)
    # a cross step's source is image1 as it was after the previous layer, not the raw tokens
    assert steps[1].name == "cross" and not torch.equal(steps[1].source, inp.tokens1)


def _random_tokens(l: int, s: int, c: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x, src = torch.randn(1, l, c, generator=g), torch.randn(1, s, c, generator=g)
    x_mask = torch.ones(1, l, dtype=torch.bool)
    x_mask[0, -3:] = False
    src_mask = torch.rand(1, s, generator=g) > 0.3
    return x, src, x_mask, src_mask


@pytest.mark.parametrize("attention", ["linear", "full"])
def test_implied_weights_sum_to_one_and_reproduce_the_attention_output(attention: str) -> None:
    cfg = get_preset("tiny_ds")
    cfg = dataclasses.replace(cfg, coarse=dataclasses.replace(cfg.coarse, attention=attention))
    torch.manual_seed(1)
    net = LoFTR(config=cfg)
    x, src, x_mask, src_mask = _random_tokens(20, 24, cfg.coarse.d_model, seed=2)
    _, _, steps = trace_transformer(net.loftr_coarse, x, src, x_mask, src_mask)
    attend = linear_attention if attention == "linear" else full_attention
    for step in steps:
        q, k, v = step.layer.project(step.x, step.source)
        reference = attend(q, k, v, step.x_mask, step.source_mask)  # (1, L, H, D)
        for query in (0, 7, 16):
            w = attention_weights(step.layer, step.x, step.source, query, step.source_mask)  # (H, S)
            assert w.shape == (cfg.coarse.nhead, step.source.shape[1])
            torch.testing.assert_close(w.sum(1), torch.ones(cfg.coarse.nhead))
            assert (w >= 0).all() and (w[:, ~step.source_mask[0]] == 0).all()
            message = torch.einsum("hs,shd->hd", w, v[0])
            torch.testing.assert_close(message, reference[0, query], rtol=1e-4, atol=1e-5)


def test_attention_maps_follow_the_query_token(model: LoFTR, pair) -> None:
    p0, p1 = pair
    query = (61.0, 40.0)  # no resize: network pixel (61, 40) → nearest cell centre (64, 40) = col 8, row 5
    layers = attention_maps(model, p0, p1, query)
    assert [(d["name"], d["layer"]) for d in layers] == [("self", 0), ("cross", 1), ("self", 2), ("cross", 3)]
    inp = coarse_inputs(model, p0, p1)
    for d in layers:
        heat, other = (d["heat0"], d["heat1"]) if d["name"] == "self" else (d["heat1"], d["heat0"])
        assert other is None
        assert heat.shape == (inp.valid0 if d["name"] == "self" else inp.valid1)
        assert abs(float(heat.sum()) - 1.0) < 1e-5 and float(heat.min()) >= 0.0
    # brute force for layer 0: the full implied matrix of every query, then the row of the query's token
    layer = model.loftr_coarse.layers[0]
    with torch.no_grad():
        q, k, _ = layer.project(inp.tokens0, inp.tokens0)
    scores = torch.einsum("lhd,shd->hls", elu_feature_map(q[0]).double(), elu_feature_map(k[0]).double())
    matrix = (scores / scores.sum(2, keepdim=True)).mean(0)  # (L, S)
    token = 5 * inp.hw0[1] + 8
    expected = matrix[token].reshape(inp.hw0).float()
    torch.testing.assert_close(layers[0]["heat0"], expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(layers[0]["heat0"], matrix[token + 1].reshape(inp.hw0).float())


def test_query_cell_maps_original_pixels_through_the_resize(model: LoFTR) -> None:
    p = Matcher(model, max_size=80).prepare(_texture(100, 160, 4))  # scale 0.5: 160x100 → 80x50, padded to 80x56
    assert p.scale == (0.5, 0.5)
    # original (x, y) → network ((x + 0.5) / 2 - 0.5, ...) ; network (24, 16) is the centre of cell (3, 2)
    assert query_cell(p, (49.0, 33.0), 8, (7, 10)) == (3, 2)
    assert query_cell(p, (0.0, 0.0), 8, (7, 10)) == (0, 0)
    assert query_cell(p, (159.0, 99.0), 8, (7, 10)) == (9, 6)
    for bad in ((160.0, 10.0), (-1.0, 10.0), (10.0, 100.0)):
        with pytest.raises(QueryError, match="outside image0, which is 160x100"):
            query_cell(p, bad, 8, (7, 10))
    with pytest.raises(QueryError):
        attention_maps(model, p, p, (500.0, 10.0))


def test_coarse_features_shapes_and_values(model: LoFTR, pair) -> None:
    p0, p1 = pair
    feats = coarse_features(model, p0, p1)
    c = model.config.coarse.d_model
    assert feats["backbone0"].shape == (c, 13, 19) and feats["backbone1"].shape == (c, 17, 12)
    assert feats["transformed0"].shape == (c, 13, 19) and feats["transformed1"].shape == (c, 17, 12)
    run = model.run(p0.image, p1.image, p0.mask, p1.mask)
    torch.testing.assert_close(feats["transformed0"], run.feat_c0[0].T.reshape(c, 13, 19), rtol=0, atol=0)
    coarse0 = model.extract(p0.image, p1.image)[0]
    torch.testing.assert_close(feats["backbone0"], coarse0[0], rtol=0, atol=0)
    assert not torch.allclose(feats["backbone0"], feats["transformed0"])
    # a Matcher prepares raw images with its own resize rule
    raw = coarse_features(Matcher(model, max_size=80), _texture(100, 160, 4), _texture(100, 160, 5))
    assert raw["backbone0"].shape == (c, 7, 10)


def test_cli_pca_and_attention_write_figures(weights_file: Path, tmp_path: Path, capsys) -> None:
    img0, img1 = photo("LightGlue__assets_sacre_coeur1.jpg"), photo("LightGlue__assets_sacre_coeur2.jpg")
    common = ["--weights", str(weights_file), "--max-size", "160"]
    assert main(["pca", str(img0), str(img1), *common, "--out", str(tmp_path / "pca.png")]) == 0
    assert "figure written" in capsys.readouterr().out
    assert (tmp_path / "pca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["attention", str(img0), str(img1), "--query", "500", "300", *common, "--out", str(tmp_path / "a.png")])
    out = capsys.readouterr().out
    assert rc == 0 and "4 coarse layers (self, cross, self, cross)" in out
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_attention_query_outside_is_one_clear_line(weights_file: Path, tmp_path: Path, capsys) -> None:
    img0, img1 = photo("LightGlue__assets_sacre_coeur1.jpg"), photo("LightGlue__assets_sacre_coeur2.jpg")
    rc = main(["attention", str(img0), str(img1), "--query", "5000", "10", "--weights", str(weights_file),
               "--max-size", "160", "--out", str(tmp_path / "a.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "outside image0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.png").exists()
    rc = main(["pca", str(img0), str(img1), "--weights", str(weights_file), "--out", str(tmp_path / "p.jpg")])
    err = capsys.readouterr().err
    assert rc == 1 and "--out must end in" in err
