"""The LoFTR network, one stage per module: backbone → position → transformer → coarse → fine."""

from .loftr import LoFTR, LoFTROutput

__all__ = ["LoFTR", "LoFTROutput"]
