"""Pictures for people: labelled sheets of images (demo output, training grids)."""

from __future__ import annotations

import cv2
import numpy as np


def comparison_sheet(rows: list[tuple[str, list[np.ndarray], list[str]]], tile_height: int = 200) -> np.ndarray:
    """Labelled rows of ``(H, W, 3)`` float images in [0, 1] -> one uint8 RGB sheet."""
    rendered = []
    for title, images, labels in rows:
        tiles = []
        for image, label in zip(images, labels):
            scale = tile_height / image.shape[0]
            tile = cv2.resize(image, (round(image.shape[1] * scale), tile_height), interpolation=cv2.INTER_AREA)
            tile = (np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8)
            band = np.full((24, tile.shape[1], 3), 255, np.uint8)
            cv2.putText(band, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.concatenate([band, tile]))
            tiles.append(np.full((tile_height + 24, 4, 3), 255, np.uint8))
        row = np.concatenate(tiles[:-1], axis=1)
        head = np.full((26, row.shape[1], 3), 235, np.uint8)
        cv2.putText(head, title, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        rendered.append(np.concatenate([head, row]))
    width = max(r.shape[1] for r in rendered)
    rendered = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rendered]
    return np.concatenate(rendered)
