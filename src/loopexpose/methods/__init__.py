"""The correction methods, each laid out the same way in its own package (``loopexpose/methods/<method>/``):

- ``network.py``: the network, registered by name with :mod:`loopexpose.models` (``loopexpose.load(name)``);
- ``labels.py``: the pseudo-labels it learns from (there is no ground truth);
- ``losses.py``: its own losses (the shared ones are :mod:`loopexpose.losses`);
- ``train.py``: its training loop, read top to bottom, with its config defaults and rules.

``loopexpose`` is LoopExpose (nested loop: Mertens fusion of the bracket as label, then of the corrected frames
fed back); ``semantic`` is the semantic-aware, CLIP-guided model (per-region labels from an exposure recogniser),
with its region providers, recogniser and selective scan beside it. Shared parts (data, fusion, evaluation,
checkpoints, metrics, config checks) live once at the package's top level; ``loopexpose train`` dispatches on
the config's ``method`` (:mod:`loopexpose.train`).
"""
