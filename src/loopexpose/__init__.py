"""loopexpose: unsupervised exposure correction (LoopExpose) and exposure fusion.

>>> import loopexpose
>>> loopexpose.__version__
'0.1.0'
"""

__version__ = "0.1.0"


def load(spec="default", device="cpu"):
    """A ready correction model: a bundled name (``"default"``) or a ``.safetensors`` checkpoint path."""
    from loopexpose.models import load as _load

    return _load(spec, device)


def fuse(frames, model=None, preset="opencv", device=None, align=False, deghost=False, overwrite_frames=False):
    """Mertens fusion of one bracket; with a ``model`` every frame is corrected first (the LoopExpose MEF result);
    with ``align=True`` a handheld bracket is registered first (and the result cropped to the common region); with
    ``deghost`` what moved between the frames comes from the frame nearest mid-grey, without ghosts (written over a
    tensor given as ``frames`` with ``overwrite_frames=True``, instead of into a copy of it).

    See :func:`loopexpose.api.fuse` for the accepted inputs (tensors, arrays, PIL images, files, a folder).
    """
    from loopexpose.api import fuse as _fuse

    return _fuse(
        frames, model=model, preset=preset, device=device, align=align, deghost=deghost,
        overwrite_frames=overwrite_frames,
    )  # fmt: skip
