"""The result type every matching entry point returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Matches:
    """Correspondences between image0 and image1.

    Attributes:
        keypoints0: (M, 2) float (x, y) pixels in image0.
        keypoints1: (M, 2) float (x, y) pixels in image1.
        confidence: (M,) coarse matching confidence in [0, 1].
        batch_indexes: (M,) long, the pair of the batch each match belongs to.
    """

    keypoints0: torch.Tensor
    keypoints1: torch.Tensor
    confidence: torch.Tensor
    batch_indexes: torch.Tensor

    def __len__(self) -> int:
        return int(self.confidence.shape[0])

    def select(self, index: torch.Tensor) -> "Matches":
        """The matches picked by a boolean mask or an index tensor."""
        return Matches(self.keypoints0[index], self.keypoints1[index], self.confidence[index], self.batch_indexes[index])

    def of_pair(self, b: int) -> "Matches":
        """The matches of pair ``b`` of a batch."""
        return self.select(self.batch_indexes == b)

    def top_k(self, k: int) -> "Matches":
        """The ``k`` most confident matches, most confident first (all of them when fewer)."""
        order = torch.argsort(self.confidence, descending=True, stable=True)[: max(int(k), 0)]
        return self.select(order)

    def to(self, device: torch.device | str) -> "Matches":
        return Matches(*(t.to(device) for t in (self.keypoints0, self.keypoints1, self.confidence, self.batch_indexes)))

    def numpy(self) -> dict[str, np.ndarray]:
        """keypoints0/1 as float32 (M, 2), confidence float32 (M,), batch_indexes int64 (M,)."""
        return {
            "keypoints0": self.keypoints0.detach().float().cpu().numpy(),
            "keypoints1": self.keypoints1.detach().float().cpu().numpy(),
            "confidence": self.confidence.detach().float().cpu().numpy(),
            "batch_indexes": self.batch_indexes.detach().long().cpu().numpy(),
        }

    def to_dict(self) -> dict[str, torch.Tensor]:
        """kornia's output keys: keypoints0, keypoints1, confidence, batch_indexes."""
        return {
            "keypoints0": self.keypoints0,
            "keypoints1": self.keypoints1,
            "confidence": self.confidence,
            "batch_indexes": self.batch_indexes,
        }
