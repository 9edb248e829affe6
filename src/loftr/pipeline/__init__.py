"""Many images: pair lists, batched resumable matching to HDF5, COLMAP/SfM, distributed runs and ONNX export.

Modules (each imports its optional dependency lazily, so ``import loftr.pipeline`` needs none of them):

- :mod:`~loftr.pipeline.pairs`: hloc pairs files, exhaustive / sequential / retrieval pair lists.
- :mod:`~loftr.pipeline.batch`: :func:`match_pairs` (DataLoader, size-grouped batches, resumable, torch.distributed).
- :mod:`~loftr.pipeline.h5`: the HDF5 layout, per-image keypoint merging, reading and merging of outputs (h5py).
- :mod:`~loftr.pipeline.colmap`: COLMAP database, geometric verification and incremental mapping (pycolmap).
- :mod:`~loftr.pipeline.export`: ONNX export of the coarse and fine stages and an onnxruntime runner.
"""

from ..errors import LoFTRError


class PipelineError(LoFTRError, ValueError):
    """Bad input to the many-image pipeline: a malformed pairs file, an unknown image, a conflicting output."""


class MissingDependencyError(LoFTRError, ImportError):
    """An optional package the asked-for feature needs is not installed."""


def require(module: str, pip_name: str, feature: str):
    """Import an optional dependency or raise a one-line :class:`MissingDependencyError` telling how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{feature} needs the '{pip_name}' package: pip install {pip_name}") from None


__all__ = ["PipelineError", "MissingDependencyError", "require"]
