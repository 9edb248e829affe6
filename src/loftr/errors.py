"""Errors with messages meant for users; the CLI prints them as one line."""


class LoFTRError(Exception):
    """Base class of the errors loftr raises for bad input."""


class ImageError(LoFTRError, ValueError):
    """An image that cannot be used: missing, not an image, unreadable, too small."""


class WeightsError(LoFTRError, RuntimeError):
    """A checkpoint that cannot be used: missing, unsafe, corrupt, or not for the chosen preset."""
