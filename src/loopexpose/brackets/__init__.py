"""Exposure brackets on disk: finding scene folders and ordering their frames (:mod:`.discover`), and splitting
a flat folder of shots into brackets (:mod:`.group`).

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
    read_bracket,
)
from loopexpose.brackets.group import Group, Grouping, group_brackets

__all__ = [
    "RULES",
    "Bracket",
    "Group",
    "Grouping",
    "ev_from_filename",
    "exif_ev",
    "find_scenes",
    "group_brackets",
    "list_images",
    "load_bracket",
    "mean_luma",
    "order_bracket",
    "read_bracket",
]
