"""Exposure brackets on disk: finding scene folders and ordering their frames (:mod:`.discover`).

Reading and writing the image files themselves is :mod:`loopexpose.io`'s job.
"""

from loopexpose.brackets.discover import (
    RULES,
    Bracket,
    ev_from_filename,
    exif_ev,
    find_scenes,
    list_images,
    load_bracket,
    mean_luma,
    order_bracket,
)

__all__ = [
    "RULES",
    "Bracket",
    "ev_from_filename",
    "exif_ev",
    "find_scenes",
    "list_images",
    "load_bracket",
    "mean_luma",
    "order_bracket",
]
