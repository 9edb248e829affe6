"""Each stage against its definition, on small inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from loftr import LoFTR, get_preset
from loftr.config import BackboneConfig, LoFTRConfig, TransformerConfig
from loftr.model.backbone import ResNetFPN
from loftr.model.coarse import log_optimal_transport, select_matches, valid_cells
from loftr.model.fine import gather_windows, sharp_matches, spatial_expectation
from loftr.model.position import PositionEncodingSine, sine_encoding


def test_backbone_strides_and_odd_sizes() -> None:
    for res, dims, coarse_div, fine_div in [((8, 2), (8, 12, 16), 8, 2), ((16, 4), (8, 12, 16, 24), 16, 4)]:
        net = ResNetFPN(BackboneConfig(resolution=res, initial_dim=8, block_dims=dims)).eval()
        for h, w in [(64, 96), (70, 101)]:
            c, f = net(torch.rand(1, 1, h, w))
            assert c.shape[2:] == (math.ceil(h / coarse_div), math.ceil(w / coarse_div))
            assert f.shape[2:] == (math.ceil(h / fine_div), math.ceil(w / fine_div))
            assert c.shape[1] == dims[-1] and f.shape[1] == (dims[0] if res == (8, 2) else dims[1])


def test_sine_encoding_values_and_growth() -> None:
    pe = sine_encoding(8, 3, 4, temp_bug_fix=True)
    # channel 0 = sin(x * 1), x counted from 1; channel 3 = cos(y * 1)
    assert torch.allclose(pe[0, 0, 0], torch.sin(torch.arange(1, 5).float()))
    assert torch.allclose(pe[0, 3, :, 0], torch.cos(torch.arange(1, 4).float()))
    fixed = sine_encoding(256, 2, 2, temp_bug_fix=True)
    buggy = sine_encoding(256, 2, 2, temp_bug_fix=False)
    assert torch.allclose(buggy[0, 4, 0, 0], torch.sin(torch.tensor(1.0) * math.exp(-2)))  # frequency e^-2k, k=1
    assert torch.allclose(fixed[0, 4, 0, 0], torch.sin(torch.tensor(1.0) * math.exp(-2 * math.log(1e4) / 128)))
    enc = PositionEncodingSine(8, max_shape=(4, 4))
    big = enc(torch.zeros(1, 8, 6, 9))
    assert torch.equal(big[0], sine_encoding(8, 6, 9)[0])  # grown table equals a direct one


def test_mutual_nearest_neighbour_selection_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(2, 30, 20, generator=g) ** 8
    v0 = torch.rand(2, 30, generator=g) > 0.2
    v1 = torch.rand(2, 20, generator=g) > 0.2
    sel = select_matches(conf, 0.05, v0, v1)
    mnn = (conf == conf.amax(2, keepdim=True)) & (conf == conf.amax(1, keepdim=True)) & (conf > 0.05)
    mnn &= v0[:, :, None] & v1[:, None, :]
    b, i, j = torch.where(mnn)
    assert torch.equal(sel.b_ids, b) and torch.equal(sel.i_ids, i) and torch.equal(sel.j_ids, j)
    torch.testing.assert_close(sel.mconf, conf[b, i, j])


def test_border_removal_respects_padding_masks() -> None:
    mask = torch.zeros(1, 6, 8, dtype=torch.bool)
    mask[:, :5, :6] = True  # 5 valid rows, 6 valid columns
    keep = valid_cells((6, 8), 1, mask, 1, torch.device("cpu")).view(6, 8)
    expected = torch.zeros(6, 8, dtype=torch.bool)
    expected[1:4, 1:5] = True
    assert torch.equal(keep, expected)
    assert valid_cells((6, 8), 0, None, 1, torch.device("cpu")).all()


def test_optimal_transport_marginals() -> None:
    scores = torch.randn(1, 5, 7, generator=torch.Generator().manual_seed(1))
    P = log_optimal_transport(scores, torch.tensor(1.0), iters=100).exp()
    # with enough iterations: every real row / column carries mass 1 (scaled by m+n), dustbins the other side's
    torch.testing.assert_close(P[0, :5].sum(1), torch.ones(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(P[0, :, :7].sum(0), torch.ones(7), atol=1e-4, rtol=0)


def test_window_gather_equals_unfold() -> None:
    feat = torch.randn(2, 3, 12, 16)
    w, stride, coarse_w = 5, 4, 4
    unfold = F.unfold(feat, (w, w), stride=stride, padding=w // 2)  # (N, C*w*w, L)
    unfold = unfold.view(2, 3, w * w, -1).permute(0, 3, 2, 1)  # (N, L, ww, C)
    b = torch.tensor([0, 1, 1, 0])
    ids = torch.tensor([0, 5, 11, 7])
    torch.testing.assert_close(gather_windows(feat, b, ids, coarse_w, w, stride), unfold[b, ids])


def test_spatial_expectation_of_a_peaked_window() -> None:
    feat0 = torch.zeros(1, 25, 4)
    feat1 = torch.zeros(1, 25, 4)
    feat0[0, 12] = torch.tensor([50.0, 0, 0, 0])
    feat1[0, 4] = torch.tensor([50.0, 0, 0, 0])  # row 0, column 4: (x, y) = (1, -1)
    out = spatial_expectation(feat0, feat1)
    torch.testing.assert_close(out[0, :2], torch.tensor([1.0, -1.0]), atol=1e-3, rtol=0)
    assert out[0, 2] < 0.05
    assert spatial_expectation(torch.zeros(0, 25, 4), torch.zeros(0, 25, 4)).shape == (0, 3)


def test_sharp_matches_drop_wide_heat_maps_but_never_most_of_a_pair() -> None:
    # pair 0: one wide map of ten; pair 1: every map wide (a scale change); pair 2: none
    std = torch.tensor([0.5] * 9 + [1.3] + [1.2, 1.5, 1.4, 1.1, 1.6] + [0.4, 0.6])
    b = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    keep = sharp_matches(std, b, 1.0)
    assert keep[:10].tolist() == [True] * 9 + [False]
    assert keep[10:15].tolist() == [True, True, True, True, False]  # only the widest 20 % (one of five) go
    assert keep[15:].all()
    assert sharp_matches(std[:0], b[:0], 1.0).shape == (0,)
    assert all(sharp_matches(std, b, off).all() for off in (None, 0.0, math.inf))  # no filter


def test_presets_match_official_configurations() -> None:
    for name in ("outdoor_ds", "indoor_ds", "outdoor_ot", "indoor_ot"):
        cfg = get_preset(name)
        assert cfg.temp_bug_fix is False and cfg.backbone.block_dims == (128, 196, 256)
        assert cfg.coarse.layer_names == ("self", "cross") * 4 and cfg.match_coarse.thr == 0.2
    assert get_preset("indoor_ds_new").temp_bug_fix is True
    assert get_preset("outdoor_ot").match_coarse.match_type == "sinkhorn"
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match="block dims"):
        BackboneConfig(resolution=(16, 4), block_dims=(1, 2, 3))
    with pytest.raises(Exception):
        get_preset("outdoor_ds").temp_bug_fix = True  # frozen


def test_full_attention_and_16_4_resolution_run_end_to_end() -> None:
    cfg = LoFTRConfig(
        backbone=BackboneConfig(resolution=(16, 4), initial_dim=8, block_dims=(8, 16, 24, 32)),
        coarse=TransformerConfig(d_model=32, nhead=4, layer_names=("self", "cross"), attention="full"),
        fine=TransformerConfig(d_model=16, nhead=4, layer_names=("self", "cross")),
    )
    model = LoFTR(config=cfg)
    out = model.run(torch.rand(1, 1, 128, 160), torch.rand(1, 1, 128, 160), thr=0.0)
    assert out.conf_matrix.shape == (1, 80, 80) and torch.isfinite(out.conf_matrix).all()
    assert len(out.matches) > 0 and (out.matches.keypoints0 % 16 == 0).all()


def test_every_parameter_gets_a_gradient_in_training() -> None:
    from loftr.train.objective import training_loss

    torch.manual_seed(0)
    model = LoFTR("tiny_ds").train()
    H = torch.eye(3, dtype=torch.float64)[None].repeat(2, 1, 1)
    H[:, 0, 2] = 5.0
    img = torch.rand(2, 1, 96, 96)
    loss, logs = training_loss(model, img, img, H)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing and logs["gt"] > 0


def test_linear_attention_normaliser_stays_in_half_precision_range_with_many_tokens() -> None:
    """The sum of elu+1 keys over S exceeds fp16's 65504 at a few thousand tokens; the mean does not."""
    from loftr.model.transformer import linear_attention, linear_attention_

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6000, 2, 16) * 2 for _ in range(3))
    want = linear_attention(q.double(), k.double(), v.double())
    for fn in (linear_attention, linear_attention_):
        got = fn(q.half().clone(), k.half().clone(), v.half().clone())
        assert torch.isfinite(got).all()
        assert float((got.double() - want).abs().max() / want.abs().max()) < 5e-3
    assert torch.allclose(linear_attention(q, k, v), want.float(), atol=1e-5, rtol=1e-4)


def _official_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_mask: torch.Tensor,
                               kv_mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The official LoFTR's linear attention, operation for operation; its three-operand einsum
    ``(Q, KV, Z) -> nlhv`` is written as torch evaluates it (left to right, without opt_einsum)."""
    Q, K = F.elu(q) + 1, F.elu(k) + 1
    Q = Q * q_mask[:, :, None, None]
    K, v = K * kv_mask[:, :, None, None], v * kv_mask[:, :, None, None]
    s = v.size(1)
    v = v / s
    KV = torch.einsum("nshd,nshv->nhdv", K, v)
    Z = 1 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv->nlhv", Q, KV) * Z[..., None] * s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("s", [25, 4800])  # a fine window, a 640x480 coarse map
def test_linear_attention_is_the_official_computation_in_full_precision(dtype: torch.dtype, s: int) -> None:
    """The reference path's attention gives the official code's floats exactly (a rearranged normaliser, even if
    equal in exact arithmetic, moves every output by a rounding step and the end-to-end keypoints with it)."""
    from loftr.model.transformer import linear_attention

    g = torch.Generator().manual_seed(s)
    q, k, v = (torch.randn(2, s, 8, 32, generator=g, dtype=dtype) for _ in range(3))
    q_mask, kv_mask = torch.ones(2, s), torch.ones(2, s)
    q_mask[1, s // 2:], kv_mask[1, s // 3:] = 0, 0
    want = _official_linear_attention(q, k, v, q_mask.to(dtype), kv_mask.to(dtype))
    assert torch.equal(linear_attention(q, k, v, q_mask.to(dtype), kv_mask.to(dtype)), want)
    want = _official_linear_attention(q, k, v, torch.ones(2, s, dtype=dtype), torch.ones(2, s, dtype=dtype))
    assert torch.equal(linear_attention(q, k, v), want)


def test_linear_attention_under_float16_autocast_with_many_tokens() -> None:
    """Float32 tensors under float16 autocast (the CUDA recipe, here on the CPU): the attention products run in
    float16, where the official sum of the keys overflows at 6000 tokens; the three linear attentions (reference,
    in place, merged into the projection) switch to the rescaled normaliser there."""
    from loftr.model.transformer import EncoderLayer, linear_attention, linear_attention_

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 6000, 2, 16) * 2 for _ in range(3))
    want = linear_attention(q.double(), k.double(), v.double())
    layer = EncoderLayer(32, 2).eval()
    x = torch.randn(1, 6000, 32) * 2
    with torch.no_grad():
        layer_want = layer.double()(x.double(), x.double())
    layer.float().fast = True
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        for fn in (linear_attention, linear_attention_):
            got = fn(q.clone(), k.clone(), v.clone())
            assert got.dtype == torch.float16
            assert float((got.double() - want).abs().max() / want.abs().max()) < 5e-3
        got = layer(x, x)  # the merged path (one image, no masks)
    assert float((got.double() - layer_want).abs().max() / layer_want.abs().max()) < 5e-3
