"""loopexpose: unsupervised exposure correction (LoopExpose) and exposure fusion.

>>> import loopexpose
>>> loopexpose.__version__
'0.1.0'
"""

__version__ = "0.1.0"
