"""Every inference shortcut against the reference path it replaces (equivalence only; speed is benchmarks/)."""

from __future__ import annotations

import copy

import pytest
import torch

from loftr import LoFTR, get_preset
from loftr.config import with_overrides
from loftr.model import lazy_fine
from loftr.model.blockwise import blockwise_maxima, dense_maxima
from loftr.model.coarse import CoarseMatching, dual_softmax, select_from_maxima, valid_cells
from loftr.model.fine import gather_windows
from loftr.model.lazy_fine import LazyFineMap
from loftr.model.optimize import fold_batchnorms, optimize_for_inference, set_fast

from ..conftest import TUM0, TUM1, load_grey, match_agreement, photo, randomize


@pytest.fixture(scope="module")
def outdoor() -> LoFTR:
    return randomize(LoFTR(config=with_overrides(get_preset("outdoor_ds"), thr=1e-6)), seed=3)


@pytest.fixture(scope="module")
def tum_pair() -> tuple[torch.Tensor, torch.Tensor]:
    return load_grey(photo(TUM0), (320, 240)), load_grey(photo(TUM1), (320, 240))


@pytest.fixture(scope="module")
def eager_out(outdoor: LoFTR, tum_pair):
    with torch.inference_mode():
        return outdoor.run(*tum_pair)


def _same_matches(a, b, kp_tol: float = 1e-3, conf_tol: float = 1e-4) -> None:
    assert len(a.matches) == len(b.matches) > 50
    assert torch.equal(a.coarse.b_ids, b.coarse.b_ids) and torch.equal(a.coarse.i_ids, b.coarse.i_ids)
    assert torch.equal(a.coarse.j_ids, b.coarse.j_ids)
    torch.testing.assert_close(a.matches.keypoints0, b.matches.keypoints0, atol=kp_tol, rtol=0)
    torch.testing.assert_close(a.matches.keypoints1, b.matches.keypoints1, atol=kp_tol, rtol=0)
    torch.testing.assert_close(a.matches.confidence, b.matches.confidence, atol=conf_tol, rtol=0)


def test_folded_batchnorm_equals_unfolded(outdoor: LoFTR, tum_pair) -> None:
    fused = optimize_for_inference(outdoor, channels_last=False, lazy_fine=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.backbone.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in outdoor.backbone.modules())  # original untouched
    with torch.inference_mode():
        ref_c, ref_f = outdoor.backbone(tum_pair[0])
        c, f = fused.backbone(tum_pair[0])
    for ref, got in ((ref_c, c), (ref_f, f)):
        assert (ref - got).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max())) / 10


def test_fold_batchnorms_counts_every_pair() -> None:
    model = LoFTR("tiny_ds")
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert fold_batchnorms(model.backbone) == n_bn and n_bn > 0


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_copy_gives_the_eager_matches(outdoor: LoFTR, tum_pair, eager_out, channels_last: bool) -> None:
    fast = optimize_for_inference(outdoor, channels_last=channels_last)
    with torch.inference_mode():
        _same_matches(eager_out, fast.run(*tum_pair))


def test_fast_copy_with_padding_masks_batch_and_sizes(outdoor: LoFTR, tum_pair) -> None:
    img0 = torch.zeros(2, 1, 192, 256)
    img0[0], img0[1, :, :160, :224] = tum_pair[0][0, :, :192, :256], tum_pair[0][0, :, :160, :224]
    mask0 = torch.zeros(2, 192, 256, dtype=torch.bool)
    mask0[0], mask0[1, :160, :224] = True, True
    img1 = load_grey(photo(TUM1), (264, 200)).expand(2, -1, -1, -1)
    mask1 = torch.ones(2, 200, 264, dtype=torch.bool)
    fast = optimize_for_inference(outdoor, block_rows=97)
    fast.batch_pixels = 0  # also the one-image-at-a-time backbone
    fast.coarse_matching.dense_limit = 0  # and blockwise coarse matching
    with torch.inference_mode():
        ref, got = outdoor.run(img0, img1, mask0, mask1), fast.run(img0, img1, mask0, mask1)
    _same_matches(ref, got)
    assert got.conf_matrix is None and set(got.coarse.b_ids.tolist()) == {0, 1}


def test_shortcuts_stay_off_for_training_and_autograd(outdoor: LoFTR, tum_pair) -> None:
    model = set_fast(LoFTR("tiny_ds"))
    model.coarse_matching.dense_limit = 0
    out = model.run(torch.rand(1, 1, 96, 96), torch.rand(1, 1, 96, 96))  # eval mode, autograd on
    assert out.conf_matrix is not None and out.conf_matrix.requires_grad
    model.train()
    with torch.no_grad():
        conf, _ = model.coarse_matching(torch.randn(1, 36, 128), torch.randn(1, 36, 128), (6, 6), (6, 6))
    assert conf is not None and conf.shape == (1, 36, 36)


def _features(n: int, l: int, s: int, c: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f0 = torch.randn(n, l, c, generator=g) * 2
    f1 = torch.cat([f0[:, : s // 2] + 0.3 * torch.randn(n, s // 2, c, generator=g),
                    torch.randn(n, s - s // 2, c, generator=g) * 2], 1)  # half of the cells have a partner
    return f0, f1


def _reference_confidence(f0: torch.Tensor, f1: torch.Tensor, temperature: float, m0: torch.Tensor | None,
                          m1: torch.Tensor | None) -> torch.Tensor:
    """The reference dual-softmax (the differentiable path's operations), invalid pairs at -INF then 0."""
    sim = torch.einsum("nlc,nsc->nls", f0 / f0.shape[-1] ** 0.5, f1 / f1.shape[-1] ** 0.5) / temperature
    invalid = None
    if m0 is not None:
        invalid = ~(m0[:, :, None] & m1[:, None, :])
        sim = sim.masked_fill(invalid, -1e9)
    conf = dual_softmax(sim)
    return conf if invalid is None else conf.masked_fill(invalid, 0.0)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("cross", [False, True])
def test_fast_encoder_layer_equals_reference(n: int, cross: bool) -> None:
    """Fused projections + linear attention with the merge folded into the key-value summaries (batches up to
    MERGED_BATCH) or the in-place einsum path (larger batches) against the reference layer."""
    from loftr.model.transformer import EncoderLayer

    torch.manual_seed(0)
    layer = EncoderLayer(64, 8).eval()
    for p in layer.parameters():
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    x, source = torch.randn(n, 50, 64), torch.randn(n, 70, 64)
    if not cross:
        source = x
    with torch.no_grad():
        ref = layer(x, source)
        layer.fast = True
        got = layer(x, source)  # self layers (source is x) take the fused Q/K/V projection
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 5, 16, 37, 64])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("path", [blockwise_maxima, dense_maxima])
def test_inference_reductions_equal_reference(rows: int, masked: bool, path) -> None:
    """Row max/argmax and column max of the confidence, from row blocks, equal the reference's."""
    f0, f1 = _features(2, 37, 53)
    m0 = m1 = None
    if masked:
        m0, m1 = torch.ones(2, 37, dtype=torch.bool), torch.ones(2, 53, dtype=torch.bool)
        m0[1, 30:], m1[0, 41:] = False, False
    conf = _reference_confidence(f0, f1, 0.1, m0, m1)
    row_max, row_arg, col_max = path(f0, f1, 0.1, m0, m1, rows=rows)
    assert torch.equal(row_arg, conf.max(2).indices)
    # 1e-6 relative: a block's similarity GEMM may round differently from the full one (1 ulp of |sim| ~ 100)
    torch.testing.assert_close(row_max, conf.amax(2), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(col_max, conf.amax(1), atol=1e-6, rtol=1e-6)


def test_mutual_maxima_are_the_same_float() -> None:
    """A mutual pair's row max and column max come from one confidence value: equal bitwise, no tolerance."""
    f0, f1 = _features(1, 64, 64, seed=3)
    conf = _reference_confidence(f0, f1, 0.1, None, None)
    i = torch.arange(64)
    mutual = conf.argmax(1)[0, conf.argmax(2)[0]] == i  # row i's best column has row i as its best
    assert mutual.sum() > 10
    for path in (blockwise_maxima, dense_maxima):
        row_max, row_arg, col_max = path(f0, f1, 0.1, rows=7)
        assert torch.equal(row_arg[0], conf.argmax(2)[0])
        assert torch.equal(col_max[0, row_arg[0]][mutual], row_max[0][mutual])


def test_blockwise_coarse_matching_equals_dense_reference() -> None:
    """The dense reference (differentiable path), the one-GEMM dense and the blockwise path select the same."""
    f0, f1 = _features(2, 48, 48, seed=1)  # 6x8 coarse maps
    mask = torch.ones(2, 6, 8, dtype=torch.bool)
    mask[1, 5:, :], mask[1, :, 6:] = False, False  # image 1 of the batch padded at the bottom/right
    matching = CoarseMatching(with_overrides(get_preset("outdoor_ds"), thr=0.01, border_rm=1).match_coarse).eval()
    _, ref = matching(f0, f1, (6, 8), (6, 8), mask, mask)  # autograd on: the reference
    with torch.no_grad():
        matching.fast = True
        dense_conf, dense = matching(f0, f1, (6, 8), (6, 8), mask, mask)
        assert dense_conf is None
        matching.dense_limit = 0
        for rows in (3, 7, 48):
            matching.block_rows = rows
            none, block = matching(f0, f1, (6, 8), (6, 8), mask, mask)
            assert none is None
            for got in (dense, block):
                assert len(ref.b_ids) > 5
                for key in ("b_ids", "i_ids", "j_ids"):
                    assert torch.equal(getattr(ref, key), getattr(got, key))
                torch.testing.assert_close(got.mconf, ref.mconf.detach(), atol=1e-6, rtol=1e-6)


def test_select_from_maxima_equals_select_on_dense() -> None:
    conf = torch.rand(2, 12, 9, generator=torch.Generator().manual_seed(2)) ** 4
    v0, v1 = valid_cells((3, 4), 0, None, 2, conf.device), valid_cells((3, 3), 0, None, 2, conf.device)
    row_max, j = conf.max(2)
    sel = select_from_maxima(row_max, j, conf.amax(1), 0.05, v0, v1)
    mnn = (conf == conf.amax(2, keepdim=True)) & (conf == conf.amax(1, keepdim=True)) & (conf > 0.05)
    assert torch.equal(torch.stack(torch.where(mnn)), torch.stack([sel.b_ids, sel.i_ids, sel.j_ids]))


@pytest.fixture(scope="module")
def fpn_maps(outdoor: LoFTR, tum_pair):
    """A fused channels-last backbone's stages, coarse and dense fine map of two 301x227 images."""
    images = torch.cat([tum_pair[0][..., :227, :301], tum_pair[1][..., :227, :301]])  # sides not multiples of 8
    backbone = optimize_for_inference(outdoor).backbone
    with torch.inference_mode():
        stages = backbone.encode(images.contiguous(memory_format=torch.channels_last))
        coarse = backbone.coarse_map(stages)
        return backbone, stages, coarse, backbone.fpn(stages, coarse)


@pytest.mark.parametrize("tile", lazy_fine.TILE_SIZES)
@pytest.mark.parametrize("upper_whole", [False, True])
def test_lazy_fine_windows_equal_dense_map(fpn_maps, monkeypatch, tile: int, upper_whole: bool) -> None:
    """Windows of the lazy map equal the dense FPN's, with the 1/4 level on tiles or computed whole."""
    monkeypatch.setattr(lazy_fine, "TILE_SIZES", (tile,))
    monkeypatch.setattr(lazy_fine, "UPPER_TILE_SIZES", ((4, 8, 64)[tile % 3],))
    monkeypatch.setattr(lazy_fine, "DENSE_BIAS", float("inf") if upper_whole else 0.0)
    backbone, stages, coarse, dense = fpn_maps
    hc, wc = coarse.shape[2:]
    g = torch.Generator().manual_seed(tile)
    b, ids = torch.randint(0, 2, (60,), generator=g), torch.randint(0, hc * wc, (60,), generator=g)
    ids[:4] = torch.tensor([0, wc - 1, (hc - 1) * wc, hc * wc - 1])  # the four corners
    with torch.inference_mode():
        ref = gather_windows(dense, b, ids, wc, 5, 4)
        lazy = LazyFineMap(backbone, stages, coarse)
        got = lazy.windows(b, ids, wc, 5, 4)
        second = lazy.select(1, 2).windows(torch.zeros_like(b), ids, wc, 5, 4)
    scale = float(ref.abs().max())
    assert (got - ref).abs().max() <= 1e-5 * scale
    assert (second - gather_windows(dense[1:], torch.zeros_like(b), ids, wc, 5, 4)).abs().max() <= 1e-5 * scale


def test_no_match_through_the_fast_path(outdoor: LoFTR, tum_pair) -> None:
    fast = optimize_for_inference(outdoor)
    with torch.inference_mode():
        out = fast.run(*tum_pair, thr=1.0)
    assert len(out.matches) == 0 and out.expec_f.shape == (0, 3)


def test_bf16_mode_agrees_with_fp32() -> None:
    """Loose check on the trained bundled weights (random weights give ambiguous matches; see benchmarks/)."""
    model = LoFTR("tiny_ds", weights="tiny_ds")
    low = optimize_for_inference(model, dtype=torch.bfloat16)
    assert low.backbone.conv1.weight.dtype == torch.bfloat16
    img0 = load_grey(photo("LightGlue__assets_DSC_0410.JPG"), (320, 240))
    img1 = load_grey(photo("LightGlue__assets_DSC_0411.JPG"), (320, 240))
    with torch.inference_mode():
        ref, got = model({"image0": img0, "image1": img1}), low({"image0": img0, "image1": img1})
    assert len(ref["keypoints0"]) > 100 and got["keypoints0"].dtype == torch.float32
    assert match_agreement(ref, got) >= 0.9


def test_fast_copy_under_autocast() -> None:
    """The CUDA recipe (float32 weights, autocast fp16/bf16), run here with CPU bf16 autocast."""
    model = LoFTR("tiny_ds", weights="tiny_ds")
    img0 = load_grey(photo("LightGlue__assets_DSC_0410.JPG"), (320, 240))
    img1 = load_grey(photo("LightGlue__assets_DSC_0411.JPG"), (320, 240))
    with torch.inference_mode():
        ref = model({"image0": img0, "image1": img1})
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = optimize_for_inference(model).run(img0, img1)
    assert out.expec_f.dtype == torch.float32 and out.matches.keypoints1.dtype == torch.float32
    assert match_agreement(ref, out.matches.to_dict()) >= 0.9


def test_compiled_copy_gives_the_same_matches() -> None:
    model = LoFTR("tiny_ds", weights="tiny_ds")
    compiled = optimize_for_inference(model, compile=True, compile_backend="eager")
    images = torch.rand(1, 1, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref, got = optimize_for_inference(model).run(images, images, thr=0.0), compiled.run(images, images, thr=0.0)
    assert len(got.matches) == len(ref.matches) > 0
    torch.testing.assert_close(got.matches.keypoints1, ref.matches.keypoints1, atol=1e-4, rtol=0)


def test_matcher_is_fast_by_default_with_the_reference_matches() -> None:
    import loftr
    from loftr import Matcher
    from loftr.errors import LoFTRError

    img0 = photo("LightGlue__assets_DSC_0410.JPG")
    img1 = photo("LightGlue__assets_DSC_0411.JPG")
    reference = Matcher(max_size=320, fast=False)
    ref = reference(img0, img1)
    fast = Matcher(max_size=320)
    got = fast(img0, img1)
    assert fast.model.fast and not reference.model.fast and len(got) == len(ref) > 50

    def by_cell(m) -> tuple[torch.Tensor, torch.Tensor]:
        """Matches in the order of their image0 cells: confidences equal to float precision may swap places in the
        best-first order of the two paths, the matches themselves may not."""
        order = torch.argsort(m.keypoints0[:, 1] * 1e5 + m.keypoints0[:, 0])
        return m.keypoints0[order], m.keypoints1[order]

    for other in (got, loftr.match(img0, img1, max_size=320)):
        for a, b in zip(by_cell(other), by_cell(ref)):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
    assert loftr.matcher._cached_matcher("default", None, None, "cpu", True, "fp32").model.fast  # match() is fast
    assert Matcher(max_size=320, dtype="bf16").model.backbone.conv1.weight.dtype == torch.bfloat16
    with pytest.raises(LoFTRError, match="fast"):
        Matcher(compile=True, fast=False)


@pytest.mark.parametrize("size", [(97, 130), (250, 333)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_stem_in_strips_equals_dense_stem(outdoor: LoFTR, size, channels_last: bool) -> None:
    from loftr.model.strips import stem_in_strips

    fused = optimize_for_inference(outdoor, channels_last=channels_last)
    bb = fused.backbone
    image = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        dense = bb.relu(bb.bn1(bb.conv1(image)))
        for block in bb.layer1:
            dense = block(dense)
        for rows in (16, 23, 1000):  # several strips (one shorter), and one strip for the whole map
            strips = stem_in_strips(bb, image, rows)
            assert strips.shape == dense.shape
            torch.testing.assert_close(strips, dense, atol=1e-4, rtol=1e-4)


def test_fast_copy_with_strips_gives_the_eager_matches(outdoor: LoFTR, tum_pair, eager_out) -> None:
    fused = optimize_for_inference(outdoor)
    fused.backbone.strip_pixels = 0  # every input in strips
    with torch.inference_mode():
        _same_matches(eager_out, fused.run(*tum_pair))


def test_plain_module_at_inference_takes_the_memory_paths_for_large_images(outdoor: LoFTR, tum_pair,
                                                                           eager_out, monkeypatch) -> None:
    """What a kornia user gets from model.eval() under inference_mode on a large image: no confidence matrix, the
    fine map around the matches only, one image at a time with the stem in strips; the same matches."""
    from loftr.model import lazy_fine as lazy_module

    plain = copy.deepcopy(outdoor)  # not a fast copy
    plain.batch_pixels = plain.backbone.strip_pixels = plain.coarse_matching.dense_limit = 0  # everything is "large"
    built = []
    monkeypatch.setattr(LazyFineMap, "__init__", _recording(LazyFineMap.__init__, built))
    with torch.inference_mode():
        got = plain.run(*tum_pair)
    assert not plain.fast and got.conf_matrix is None and len(built) == 2  # lazy fine maps, one per image
    _same_matches(eager_out, got)
    assert eager_out.conf_matrix is not None and lazy_module.LazyFineMap is LazyFineMap
    plain.train()  # training mode: the reference path, whatever the size
    with torch.no_grad():
        assert plain.run(*tum_pair).conf_matrix is not None


def _recording(init, calls: list):
    def wrapped(self, *args, **kwargs):
        calls.append(1)
        return init(self, *args, **kwargs)
    return wrapped


def _inputs_with_ties_and_masks() -> tuple[torch.Tensor, ...]:
    f0, f1 = _features(2, 48, 48, seed=5)
    m0, m1 = torch.ones(2, 48, dtype=torch.bool), torch.ones(2, 48, dtype=torch.bool)
    m0[1, 40:], m1[0, 30:] = False, False
    return f0, f1, m0, m1


@pytest.mark.parametrize("rows", [1, 7, 48])
@pytest.mark.parametrize("masked", [False, True])
def test_argmax_form_mutual_check_equals_reference(rows: int, masked: bool) -> None:
    """dense_mutual: the row picks of the confidence, its mutual nearest neighbours and their confidences."""
    from loftr.model.mutual import dense_mutual

    f0, f1, m0, m1 = _inputs_with_ties_and_masks()
    if not masked:
        m0 = m1 = None
    conf = _reference_confidence(f0, f1, 0.1, m0, m1)
    j_all, mutual, got = dense_mutual(f0, f1, 0.1, m0, m1, rows=rows)
    valid = torch.ones(2, 48, dtype=torch.bool) if m0 is None else m0
    assert torch.equal(j_all[valid], conf.argmax(2)[valid])
    want = (conf.argmax(1).gather(1, conf.argmax(2)) == torch.arange(48)) & valid
    assert torch.equal(mutual & valid, want) and want.sum() > 10
    torch.testing.assert_close(got[want], conf.amax(2)[want], atol=1e-6, rtol=1e-6)


def test_fast_copy_of_the_bundled_model_gives_the_reference_matches_on_motorcycle() -> None:
    """The fast path (argmax-form mutual check, fused layers, lazy fine map) against the plain module, bundled
    weights, a real 640x480 pair (scikit-image's Motorcycle, no ../shared needed): the same cell pairs."""
    from loftr.eval.stereo import motorcycle

    model = LoFTR("tiny_ds", weights="tiny_ds")
    pair = motorcycle()
    img0, img1 = load_grey(pair.left, (640, 480)), load_grey(pair.right, (640, 480))
    with torch.inference_mode():
        ref = model.run(img0, img1, thr=0.0, max_std=0)
        got = optimize_for_inference(model).run(img0, img1, thr=0.0, max_std=0)
    assert got.conf_matrix is None and len(ref.matches) > 1000
    _same_matches(ref, got, kp_tol=1e-3, conf_tol=1e-4)
