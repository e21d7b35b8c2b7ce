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
