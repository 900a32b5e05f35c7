"""``--preview``: a contact sheet PNG of every Nth output frame, to check a long render at a glance.

Thumbnails are kept small and few (at most ``max_tiles``): when the sheet is full, every second
tile is dropped and the stride doubles, so memory stays flat over a stream of any length and
the sheet always spans the whole stream. The PNG is written under a temporary name and renamed
when the stream ends.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..fileio import output_error, temp_file_beside


class ContactSheet:
    def __init__(self, path: Path, every: int = 25, columns: int = 8, tile_width: int = 160, max_tiles: int = 64):
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise UserError("the preview is a PNG contact sheet; expected a .png file name", path)
        if every < 1:
            raise UserError(f"--preview-every {every}; expected a positive number of frames")
        if path.is_dir():
            raise UserError("is a folder; expected a .png file name for the preview", path)
        self.path, self.every, self.columns, self.tile_width = path, every, columns, tile_width
        self.max_tiles = max(2, max_tiles)
        self.tiles: List[Tuple[int, np.ndarray]] = []

    def add(self, frame: np.ndarray, number: int) -> None:
        """Offer output frame ``number`` (uint8 BGR, H x W x 3); kept when it falls on the stride."""
        if number % self.every:
            return
        h, w = frame.shape[:2]
        size = (self.tile_width, max(1, round(h * self.tile_width / w)))
        self.tiles.append((number, cv2.resize(frame, size, interpolation=cv2.INTER_AREA)))
        if len(self.tiles) > self.max_tiles:
            self.every *= 2
            self.tiles = [(n, t) for n, t in self.tiles if n % self.every == 0]

    def render(self) -> np.ndarray:
        """The sheet: tiles in rows of ``columns``, each labelled with its frame number."""
        if not self.tiles:
            return np.zeros((16, self.tile_width, 3), np.uint8)
        th, tw = self.tiles[0][1].shape[:2]
        rows = (len(self.tiles) + self.columns - 1) // self.columns
        cols = min(self.columns, len(self.tiles))
        sheet = np.full((rows * (th + 2), cols * (tw + 2), 3), 32, np.uint8)
        for i, (number, tile) in enumerate(self.tiles):
            y, x = (i // self.columns) * (th + 2), (i % self.columns) * (tw + 2)
            sheet[y:y + th, x:x + tw] = tile
            cv2.putText(sheet, str(number), (x + 3, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
            cv2.putText(sheet, str(number), (x + 3, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        return sheet

    def close(self) -> Path:
        ok, png = cv2.imencode(".png", self.render())
        if not ok:
            raise UserError("could not encode the preview PNG", self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file_beside(self.path, suffix=".png")
        except OSError as exc:
            raise output_error(exc, self.path, "the preview") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(png.tobytes())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise output_error(exc, self.path, "the preview") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path

    def abort(self) -> None:
        self.tiles = []
