"""loftr: LoFTR detector-free local feature matching.

>>> import loftr
>>> m = loftr.match("a.jpg", "b.jpg")                      # Matches, keypoints in original pixels
>>> model = loftr.LoFTR("outdoor_ds", weights="outdoor_ds")  # the nn.Module, kornia-compatible
"""

from .config import PRESETS, LoFTRConfig, get_preset
from .errors import ImageError, LoFTRError, WeightsError
from .matcher import Matcher, match
from .weights import LoFTR  # the network of loftr.model with a `weights` argument
from .types import Matches

__all__ = ["LoFTR", "LoFTRConfig", "Matcher", "Matches", "PRESETS", "get_preset", "match", "LoFTRError",
           "ImageError", "WeightsError"]
__version__ = "0.1.0"
