"""The fast JPEG path of ``load_image`` gives the official reader's pixels, bit for bit.

References: Pillow (``load_image_pillow``, the path every image took before) and, when
installed, OpenCV's ``cv2.imread`` + BGR→RGB — what the official ``LoadImageFromFile`` calls.
A test that patches the Pillow path to fail proves the JPEG path really ran.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import posebh.image_io as image_io
from posebh.image_io import jpeg_exif_orientation, load_image, load_image_pillow


def _fixture_jpegs(fixtures_dir: Path) -> list[Path]:
    files = sorted(fixtures_dir.rglob("*.jpg"))
    assert len(files) >= 20, f"expected the mmpose fixture images under {fixtures_dir}"
    return files


@pytest.fixture
def no_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the Pillow path fail, so a result can only come from the JPEG path."""

    def refuse(path: object) -> np.ndarray:
        raise AssertionError(f"Pillow path taken for {path}")

    monkeypatch.setattr(image_io, "load_image_pillow", refuse)


def test_fixture_jpegs_equal_pillow_through_the_jpeg_path(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _fixture_jpegs(fixtures_dir)
    expected = [load_image_pillow(p) for p in files]
    monkeypatch.setattr(image_io, "load_image_pillow", lambda p: pytest.fail(f"Pillow: {p}"))
    for path, ref in zip(files, expected, strict=True):
        out = load_image(path)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, ref, err_msg=str(path))


def test_fixture_jpegs_equal_opencv_imread(fixtures_dir: Path) -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) not installed")
    for path in _fixture_jpegs(fixtures_dir):
        ref = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(load_image(path), ref, err_msg=str(path))


def _jpeg(array: np.ndarray, mode: str = "RGB", orientation: int | None = None) -> bytes:
    im = Image.fromarray(array).convert(mode)
    kwargs: dict = {"quality": 92}
    if orientation is not None:
        exif = im.getexif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


@pytest.fixture
def patch(fixtures_dir: Path) -> np.ndarray:
    with Image.open(fixtures_dir / "coco" / "000000000785.jpg") as im:
        return np.asarray(im.convert("RGB"))[80:197, 200:291].copy()  # 117×91: odd sizes


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(
    patch: np.ndarray, tmp_path: Path, orientation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(_jpeg(patch, orientation=orientation))
    assert jpeg_exif_orientation(path.read_bytes()) == orientation
    ref = load_image_pillow(path)
    monkeypatch.setattr(image_io, "load_image_pillow", lambda p: pytest.fail("Pillow path"))
    np.testing.assert_array_equal(load_image(path), ref)


def test_grey_jpeg_gives_three_equal_channels(patch: np.ndarray, tmp_path: Path, no_pillow) -> None:
    path = tmp_path / "g.jpg"
    path.write_bytes(_jpeg(patch, mode="L"))
    with Image.open(path) as im:
        grey = np.asarray(im)
    out = load_image(path)
    assert out.shape == (*grey.shape, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_cmyk_jpeg_goes_to_pillow(patch: np.ndarray, tmp_path: Path) -> None:
    # libjpeg-turbo has no CMYK → RGB conversion; simplejpeg's own differs from Pillow's.
    path = tmp_path / "c.jpg"
    path.write_bytes(_jpeg(patch, mode="CMYK"))
    np.testing.assert_array_equal(load_image(path), load_image_pillow(path))


def test_damaged_jpeg_fails_as_pillow_does(patch: np.ndarray, tmp_path: Path) -> None:
    data = _jpeg(patch)
    path = tmp_path / "t.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError) as pillow_error:
        load_image_pillow(path)
    with pytest.raises(type(pillow_error.value)) as ours:
        load_image(path)
    assert str(ours.value) == str(pillow_error.value)


def test_png_is_read_by_pillow(patch: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.fromarray(patch).save(path)
    np.testing.assert_array_equal(load_image(path), patch)


def _with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """``data`` with one more segment right after SOI."""
    return data[:2] + struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload + data[2:]


def test_orientation_parser_refuses_what_it_cannot_be_sure_of(patch: np.ndarray) -> None:
    plain = _jpeg(patch)
    assert jpeg_exif_orientation(plain) == 1
    oriented = _jpeg(patch, orientation=6)
    # A second EXIF segment (Pillow joins them): the caller must let Pillow decide.
    exif_segment = oriented[oriented.index(b"Exif\x00\x00") - 4 :]
    length = struct.unpack(">H", exif_segment[2:4])[0]
    doubled = _with_segment(oriented, 0xE1, exif_segment[4 : 2 + length])
    assert jpeg_exif_orientation(doubled) is None
    # Garbage where a marker should be, a segment running past the end, a bad TIFF header.
    assert jpeg_exif_orientation(plain[:2] + b"\x00\x00" + plain[2:]) is None
    assert jpeg_exif_orientation(plain[:2] + b"\xff\xe1\xff\xff") is None
    assert jpeg_exif_orientation(_with_segment(plain, 0xE1, b"Exif\x00\x00XX\x00*")) is None
    # An orientation outside 1–8 is Pillow's to (not) apply.
    bad = _with_segment(
        plain,
        0xE1,
        b"Exif\x00\x00"
        + b"II*\x00\x08\x00\x00\x00"
        + b"\x01\x00"
        + struct.pack("<HHIHH", 0x0112, 3, 1, 9, 0),
    )
    assert jpeg_exif_orientation(bad) is None


def test_odd_exif_files_decode_as_pillow_does(patch: np.ndarray, tmp_path: Path) -> None:
    oriented = _jpeg(patch, orientation=8)
    exif_segment = oriented[oriented.index(b"Exif\x00\x00") - 4 :]
    length = struct.unpack(">H", exif_segment[2:4])[0]
    path = tmp_path / "two_exif.jpg"
    path.write_bytes(_with_segment(oriented, 0xE1, exif_segment[4 : 2 + length]))
    np.testing.assert_array_equal(load_image(path), load_image_pillow(path))
