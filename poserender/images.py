"""Reading the images a user gives (source frames, parsings, training images), refusing broken ones.

OpenCV decodes a truncated JPEG without an error: libjpeg prints "Premature end of JPEG file" on
stderr and fills the missing part with grey, so a source cut to 3 KB of its 76 KB would render as
a mostly grey person. :func:`read_image` walks the file's own structure first (JPEG markers up to
the end-of-image marker, PNG chunks up to IEND) and refuses a file that ends early, then decodes
it with OpenCV. Other formats OpenCV reads are decoded as they are.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from .errors import UserError

PathLike = Union[str, Path]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers without a length field: TEM, RST0-7, SOI, EOI
_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}


def jpeg_problem(data: bytes) -> Optional[str]:
    """Why a JPEG file is incomplete, or None. Segments are followed by their lengths (so an EXIF
    thumbnail's own end marker inside APP1 does not count); entropy-coded data after SOS is
    scanned for the next marker (0xFF followed by neither 0x00 nor a restart marker)."""
    n, i = len(data), 2
    while i < n:
        if data[i] != 0xFF:
            return f"bytes out of place at offset {i} (a damaged JPEG)"
        while i < n and data[i] == 0xFF:       # fill bytes before a marker
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return None                          # end of image
        if marker in _STANDALONE:
            continue
        if i + 2 > n:
            break
        length = struct.unpack(">H", data[i:i + 2])[0]
        if length < 2 or i + length > n:
            break
        i += length
        if marker == 0xDA:                       # start of scan: entropy-coded data follows
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    i = n
                    break
                following = data[j + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    i = j + (2 if following != 0xFF else 1)
                    continue
                i = j
                break
    return f"the file ends after {n} bytes, before the JPEG end-of-image marker (truncated)"


def png_problem(data: bytes) -> Optional[str]:
    """Why a PNG file is incomplete, or None: its chunks must run whole up to IEND."""
    i, n = len(_PNG_SIGNATURE), len(data)
    while i + 8 <= n:
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        i += 12 + length
        if i > n:
            break
        if kind == b"IEND":
            return None
    return f"the file ends after {n} bytes, before the PNG end chunk IEND (truncated)"


def image_problem(data: bytes) -> Optional[str]:
    """A structural problem of a JPEG or PNG file's bytes; None when whole or of another format."""
    if data[:2] == b"\xff\xd8":
        return jpeg_problem(data)
    if data[:8] == _PNG_SIGNATURE:
        return png_problem(data)
    return None


def read_image(path: PathLike, flags: int = cv2.IMREAD_COLOR, what: str = "image") -> np.ndarray:
    """Decode an image file with OpenCV (``flags`` as for ``cv2.imread``), refusing a missing,
    truncated or undecodable one with one line naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} not found", path) from None
    except OSError as exc:
        raise UserError(f"cannot read the {what} ({exc.strerror or exc})", path) from None
    problem = image_problem(data)
    if problem is not None:
        raise UserError(f"{what} is incomplete: {problem}; expected a whole JPEG/PNG file", path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise UserError(f"cannot decode the {what}; expected a JPEG/PNG readable by OpenCV", path)
    return image
