"""A folder of images of every kind Pillow reads: 8-bit grey, colour, palette, 1-bit are grey
levels 0..255; 16-bit, 32-bit and floating-point images are refused (they were clipped to
0..255, silently); a decompression bomb is one line, not Pillow's error or warning."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from scratchvae.data import DataError, load_dataset


def _folder(tmp_path, make, suffix=".png", n=2):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        make().save(folder / f"{i}{suffix}")
    return folder


GREY = np.array([[0, 51], [204, 255]], np.uint8)


@pytest.mark.parametrize(
    "make, suffix",
    [
        (lambda: Image.fromarray(GREY), ".png"),
        (lambda: Image.fromarray(GREY).convert("RGB"), ".png"),
        (lambda: Image.fromarray(GREY).convert("RGBA"), ".png"),
        (lambda: Image.fromarray(GREY).convert("LA"), ".png"),
        (lambda: Image.fromarray(GREY).convert("P"), ".png"),
        (lambda: Image.fromarray(GREY), ".pgm"),
        (lambda: Image.fromarray(GREY), ".bmp"),
        (lambda: Image.fromarray(GREY), ".tiff"),
    ],
    ids=["L", "RGB", "RGBA", "LA", "P", "pgm", "bmp", "tiff"],
)
def test_8_bit_images_are_grey_levels(tmp_path, make, suffix):
    ds = load_dataset(str(_folder(tmp_path, make, suffix)))
    expected = np.tile(GREY.reshape(1, -1), (2, 1)) / np.float32(255)
    np.testing.assert_array_equal(ds.get_batch(slice(None)), expected)


def test_1_bit_images_are_0_and_1(tmp_path):
    bits = np.array([[0, 1], [1, 0]], bool)
    ds = load_dataset(str(_folder(tmp_path, lambda: Image.fromarray(bits))))
    np.testing.assert_array_equal(ds.get_batch(slice(None)), np.tile(bits.reshape(1, -1), (2, 1)))


@pytest.mark.parametrize(
    "array, suffix, mode",
    [
        (np.array([[0, 1000], [30000, 65535]], np.uint16), ".png", "I;16"),
        (np.array([[0, 100000], [5, 255]], np.int32), ".tiff", "I"),
        (np.array([[0.0, 0.5], [1.0, 0.25]], np.float32), ".tiff", "F"),
    ],
    ids=["16-bit", "32-bit", "float"],
)
def test_images_deeper_than_8_bits_are_refused_not_clipped(tmp_path, array, suffix, mode):
    """A 16-bit PNG's 1000 became 255 and a float TIFF's 0.5 became 0 (Pillow's convert("L")
    clips and truncates): trained on without a word."""
    folder = _folder(tmp_path, lambda: Image.fromarray(array), suffix)
    with pytest.raises(DataError) as err:
        load_dataset(str(folder))
    assert str(err.value) == (
        f"{folder / ('0' + suffix)} is an image of mode {mode}, not 8-bit: its values would be "
        "clipped to 0..255; convert the images to 8-bit grey levels, or save the data as a "
        ".npy array scaled to [0, 1]"
    )


def _png_rgb16(path, rgb: np.ndarray) -> None:
    """A PNG of 16 bits a channel, colour (Pillow reads such files but cannot write them)."""
    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # bit depth 16, colour type 2: RGB
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + chunk(b"IEND", b""))


def test_a_colour_png_of_16_bits_a_channel_is_refused_not_truncated(tmp_path):
    """Pillow opens it as mode RGB and keeps each value's high byte: 0x0180 became 1."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        _png_rgb16(folder / f"{i}.png", np.full((2, 2, 3), 0x0180, np.uint16))
    with Image.open(folder / "0.png") as im:
        assert im.mode == "RGB"  # what made the check by mode miss it
    with pytest.raises(DataError, match=r"0\.png is an image of mode RGB, not 8-bit"):
        load_dataset(str(folder))


@pytest.mark.parametrize("pixels", [100_000_000, 200_000_000], ids=["warned", "refused"])
def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch, pixels):
    """Pillow warns above MAX_IMAGE_PIXELS and raises DecompressionBombError (no OSError: it
    was a traceback) above twice that. Both are one DataError, and nothing is decoded."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 80)  # a 10x10 image stands in for 100 Mpx
    side = 10 if pixels == 100_000_000 else 13
    folder = _folder(tmp_path, lambda: Image.new("L", (side, side)), n=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as err:
            load_dataset(str(folder))
    assert str(err.value) == (
        f"{folder / '0.png'} has more pixels than Pillow decodes safely (80; a decompression "
        "bomb?); resize it"
    )
