"""Region providers, exposure recognisers (CNN or CLIP), pseudo-labels and losses of the semantic-aware model.

The network itself is :mod:`loopexpose.models.semantic`; its training loop is :mod:`loopexpose.semantics.train`.
"""
