"""LoopExpose: ``network.py`` (CurveGrid, the single-exposure-correction network), ``labels.py`` (the bracket's
Mertens fusion: of the input frames during warm-up, then of the corrected frames with the inputs, the feedback),
``losses.py`` (Luminance Ranking Loss, cross-exposure consistency), ``train.py`` (the nested loop)."""
