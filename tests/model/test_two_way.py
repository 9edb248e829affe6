"""Two-way refinement: every coarse match also refined from image1's cell into image0's window."""

from __future__ import annotations

import torch

from loftr import LoFTR, get_preset
from loftr.config import with_overrides
from loftr.model.fine import spatial_expectation
from loftr.model.optimize import optimize_for_inference

from ..conftest import TUM0, TUM1, load_grey, photo, randomize


def test_two_way_adds_the_reverse_refinement_of_each_coarse_match() -> None:
    model = randomize(LoFTR(config=with_overrides(get_preset("tiny_ds"), thr=1e-6)), seed=5)
    img0, img1 = load_grey(photo(TUM0), (320, 240)), load_grey(photo(TUM1), (320, 240))
    with torch.inference_mode():
        one = model.run(img0, img1, max_std=0)
        two = model.run(img0, img1, max_std=0, two_way=True)
        # the reverse expectation from the pair's own fine windows, by hand
        c0, f0, c1, f1 = model.extract(img0, img1)
        t0, t1 = model.transform_coarse(c0, c1)
        s = one.coarse
        w0, w1 = model.fine_preprocess(f0, f1, t0, t1, s.b_ids, s.i_ids, s.j_ids, one.hw0_c[1], one.hw1_c[1], 4)
        w0, w1 = model.loftr_fine(w0, w1)
        back = spatial_expectation(w1, w0)
    m = len(one.matches)
    assert m > 50 and len(two.matches) == 2 * m
    fwd, rev = two.matches.select(torch.arange(m)), two.matches.select(torch.arange(m, 2 * m))
    for a, b in ((fwd.keypoints0, one.matches.keypoints0), (fwd.keypoints1, one.matches.keypoints1),
                 (fwd.confidence, one.matches.confidence)):
        assert torch.equal(a, b)  # the forward matches are unchanged
    w = one.hw1_c[1]
    grid1 = torch.stack([s.j_ids % w, s.j_ids // w], 1).float() * 8
    assert torch.equal(rev.keypoints1, grid1)  # image1's side sits on its coarse grid...
    torch.testing.assert_close(rev.keypoints0, fwd.keypoints0 + back[:, :2] * 4, atol=1e-5, rtol=0)  # ...refined in 0
    assert (rev.keypoints0 - fwd.keypoints0).abs().max() <= 4 and (rev.keypoints0 != fwd.keypoints0).any()
    assert torch.equal(rev.confidence, fwd.confidence) and torch.equal(rev.batch_indexes, fwd.batch_indexes)
    # the fast copy gives the same two-way matches
    with torch.inference_mode():
        fast = optimize_for_inference(model).run(img0, img1, max_std=0, two_way=True)
    assert len(fast.matches) == 2 * m
    torch.testing.assert_close(fast.matches.keypoints0, two.matches.keypoints0, atol=1e-3, rtol=0)
    torch.testing.assert_close(fast.matches.keypoints1, two.matches.keypoints1, atol=1e-3, rtol=0)


def test_two_way_filters_each_direction_by_its_own_spread() -> None:
    model = randomize(LoFTR(config=with_overrides(get_preset("tiny_ds"), thr=1e-6)), seed=5)
    img0, img1 = load_grey(photo(TUM0), (320, 240)), load_grey(photo(TUM1), (320, 240))
    with torch.inference_mode():
        all_two = model.run(img0, img1, max_std=0, two_way=True)
        limit = float(all_two.expec_f[:, 2].median())
        filtered = model.run(img0, img1, max_std=limit, two_way=True)
        one = model.run(img0, img1, max_std=limit)
    m = len(one.matches)
    assert 0 < m < len(all_two.matches) // 2
    assert torch.equal(filtered.matches.keypoints0[:m], one.matches.keypoints0)  # forward: the one-way filter
    assert len(filtered.matches) - m > 0  # the reverse half has its own survivors
