"""Reading dataset images as the official pipeline sees them: RGB uint8 ``[H, W, 3]``.

The official ``LoadImageFromFile`` calls mmcv ``imread(path, 'color', 'rgb')``: OpenCV's
``cv2.imread(path, IMREAD_COLOR)`` then BGR→RGB. What that gives, and so what
:func:`load_image` returns:

* EXIF orientation applied (JPEG; PNG too since OpenCV 4.5.2);
* grey images as three equal channels, palette images as their palette colours, alpha
  dropped (not composited);
* 16-bit grey keeps its high byte (OpenCV's ``>> 8``; Pillow alone would clip).

Two decoders give those pixels:

* **JPEG** (the COCO-family datasets): libjpeg-turbo through ``simplejpeg``, straight into a
  NumPy array with the same settings as OpenCV and Pillow (accurate integer IDCT, smooth chroma
  upsampling), so the pixels are the same bits (tests/test_image_io.py checks every fixture
  image against Pillow and, when installed, ``cv2.imread``). It skips Pillow's image object and
  mode conversion: about 1.5× faster per image (``benchmarks/test_bench_scale.py``). The EXIF
  orientation is read from the file's APP1 segment by :func:`jpeg_exif_orientation`.
* **everything else**, and the JPEGs ``simplejpeg`` does not decode the same way (CMYK/YCCK
  colour, or a file it rejects as damaged): Pillow, as before — so an unusual file behaves
  exactly as it always did, errors included.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

__all__ = ["jpeg_exif_orientation", "load_image", "load_image_pillow"]

_JPEG_SOI = b"\xff\xd8\xff"
#: JPEG colour spaces libjpeg-turbo converts to RGB exactly as OpenCV and Pillow do.
_DIRECT_COLORSPACES = frozenset({"YCbCr", "Gray"})
_EXIF_ORIENTATION_TAG = 0x0112


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]``, pixel for pixel what the official
    reader (``cv2.imread`` + BGR→RGB) gives; see the module docstring.

    Errors are Pillow's (``OSError`` for a missing, unreadable or damaged file).
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:3] == _JPEG_SOI:
        image = _decode_jpeg(data)
        if image is not None:
            return image
    return load_image_pillow(path)


def load_image_pillow(path: str | os.PathLike[str]) -> np.ndarray:
    """:func:`load_image` through Pillow alone (every format; the reference of the JPEG path)."""
    with Image.open(path) as im:
        sixteen_bit = im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG")
        im = ImageOps.exif_transpose(im)
        if sixteen_bit:
            grey = (np.asarray(im, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"))


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """The JPEG decoded and oriented, or None when Pillow must decode it instead."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in _DIRECT_COLORSPACES or _is_pillow_bomb(height * width):
            return None
        orientation = jpeg_exif_orientation(data)
        if orientation is None:
            return None
        image = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:  # damaged or unsupported: Pillow decides (and words the error)
        return None
    return _orient(image, orientation)


def _is_pillow_bomb(pixels: int) -> bool:
    """Whether Pillow refuses (or warns about) an image this large: it decides, as before."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and pixels > limit


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1–8 as ``PIL.ImageOps.exif_transpose`` does (a copy if moved)."""
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation == 5:
        image = image.transpose(1, 0, 2)
    elif orientation == 6:
        image = np.rot90(image, k=-1)
    elif orientation == 7:
        image = image.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        image = np.rot90(image, k=1)
    return image if orientation in (0, 1) else np.ascontiguousarray(image)


def jpeg_exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation (1–8; 1 when the file has none) of JPEG bytes, or None when the
    markers or the EXIF block cannot be read with certainty (the caller then lets Pillow
    decide, so an odd file is never oriented differently from the reference).

    Walks the marker segments up to the first scan; an APP1 segment starting with
    ``Exif\\0\\0`` (exactly one; Pillow would join several) holds a TIFF header whose
    first IFD may carry tag 0x0112 (SHORT).
    """
    pos, end = 2, len(data)
    found: int | None = 1
    seen_exif = False
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no EXIF past here
            return found
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > end:
            return None
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            if seen_exif:  # Pillow joins several EXIF segments into one block: its call
                return None
            seen_exif = True
            found = _tiff_orientation(data[pos + 10 : pos + 2 + length])
            if found is None:
                return None
        pos += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of IFD0 of a TIFF block (1 if absent); None if the block is malformed or
    the value is not an orientation Pillow would apply the same way."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        magic, ifd = struct.unpack_from(order + "HI", tiff, 2)
        if magic != 42:
            return None
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, kind, n = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag != _EXIF_ORIENTATION_TAG:
                continue
            if kind != 3 or n != 1:  # not one SHORT: let Pillow interpret it
                return None
            (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * i + 8)
            return value if 1 <= value <= 8 else None
    except struct.error:
        return None
    return 1
