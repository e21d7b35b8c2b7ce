"""The semantic-aware model (after Wu et al., 2026): ``network.py`` (the network), ``labels.py`` (recogniser-guided
pseudo-labels), ``losses.py``, ``train.py``; and what they use: ``regions.py`` (region providers: superpixels or
FastSAM), ``recogniser.py`` (exposure recognisers: CNN or CLIP), ``scan.py`` (the selective scan)."""
