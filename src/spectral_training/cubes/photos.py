"""Read one PNG or JPEG photograph into a float32 RGB ``(3, H, W)`` array, or say why not.

Image-classification datasets arrive as photographs in class sub-folders
(``data/01_raw/<dataset>/<class>/*.jpg``). They enter the same store as spectral cubes, as
3-band cubes, so every family, transform and plot works on them unchanged:

- the EXIF orientation tag is applied first, so a phone photo taken upright is stored upright;
- every Pillow mode ends as 3 bands red, green, blue: grey levels ("1", "L", "I;16") are copied
  into all three bands, palettes ("P") are looked up, CMYK and YCbCr are converted by Pillow
  (no ICC colour management: values are used as stored);
- alpha ("LA", "RGBA", "PA", or a palette / grey transparency entry) is composited over black:
  each colour is multiplied by its opacity, so a fully transparent pixel reads 0 whatever
  colour it hides, and the alpha band itself is dropped;
- values are float32 in [0, 1]: 8-bit images divided by 255, 16-bit PNGs by 65535;
- with ``size``, the image is centre-cropped to a square (aspect kept, the short side kept
  whole) and resized to ``size`` x ``size`` with Pillow's antialiased Lanczos filter, so one
  photo is exactly one tile of the store. Smaller photos are enlarged the same way.

This module knows only Pillow and NumPy. :mod:`.readers` dispatches ``.png``/``.jpg``/``.jpeg``
here and turns :class:`PhotoError` into its ``CubeFileError``; :func:`probe_photo` reads a
header alone (for :mod:`.cube_headers`). Photos are opened read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Registers the decoders named in _FORMATS: Image.open(formats=...) fails with a KeyError on a
# format whose plugin has not been imported yet (e.g. a .png file that is really a JPEG).
from PIL import JpegImagePlugin, PngImagePlugin  # noqa: F401  isort: skip

PHOTO_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
RGB_BAND_NAMES: tuple[str, str, str] = ("red", "green", "blue")
# Nominal centres (nm) of camera red/green/blue filters: only so that RGB plots and
# wavelength-aware code find the bands; photographs carry no calibrated wavelengths.
RGB_WAVELENGTHS_NM: tuple[float, float, float] = (640.0, 550.0, 465.0)

# Only these decoders are tried: a file named .png that is really something else is refused
# rather than handed to whichever of Pillow's many decoders claims it. Phones write JPEGs
# with extra preview pictures (MPO): the JPEG decoder opens them, and reads the first picture.
_FORMATS = ("PNG", "JPEG")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


class PhotoError(ValueError):
    """A photograph that cannot be read; ``reason`` and ``fix`` are full sentences."""

    def __init__(self, reason: str, fix: str):
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason} Fix: {fix}")

    def __reduce__(self):
        return (type(self), (self.reason, self.fix))


@dataclass(frozen=True)
class Photo:
    """A decoded photograph.

    ``data`` is float32 ``(3, H, W)`` in [0, 1], C-contiguous; ``source_dtype`` is the sample
    type in the file ("uint8", "uint16", "bool" for 1-bit images); ``source_mode`` is Pillow's
    mode as found (e.g. "RGBA"); ``native_hw`` is (H, W) after orientation, before crop/resize.
    """

    data: np.ndarray
    source_dtype: str
    source_mode: str
    native_hw: tuple[int, int]


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the largest centred square of a width x height image.

    The short side is kept whole; an odd remainder leaves the extra pixel on the right/bottom.
    """
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def read_photo(path: str | Path, *, size: int | None = None) -> Photo:
    """Decode a PNG or JPEG file into a :class:`Photo` (see the module docstring for the rules).

    Args:
        path: an existing, non-empty file (the caller checks existence and permissions).
        size: side of the square output in pixels; None keeps the native size and aspect.

    Raises:
        PhotoError: the file is not a PNG/JPEG, is truncated or corrupt, is above Pillow's
            decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS`` times 2), has a zero-size
            side, or has a mode that cannot be turned into RGB.
    """
    path = Path(path)
    with _decoding_errors():
        with Image.open(path, formats=_FORMATS) as opened:
            source_mode = opened.mode
            if size is not None and opened.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size:
                # several times faster on camera photos, and the resize below still antialiases.
                opened.draft(None, (size, size))
            image = ImageOps.exif_transpose(opened)  # a loaded copy: all decoding happens here
        width, height = image.size
        _check_has_pixels(width, height)
        image, source_dtype, scale = _as_rgb_family(image, source_mode)
        if size is not None:
            image = image.resize((size, size), Image.Resampling.LANCZOS, box=centre_square(width, height))
        values = np.asarray(image, dtype=np.float32) / np.float32(scale)
    return Photo(
        data=_to_chw_rgb(values),
        source_dtype=source_dtype,
        source_mode=source_mode,
        native_hw=(height, width),
    )


def probe_photo(path: str | Path) -> tuple[str, str]:
    """Pillow's mode and the sample type (as :attr:`Photo.source_dtype`) of a photograph, from
    its header alone: nothing is decoded.

    Raises:
        PhotoError: as :func:`read_photo` does for what the header shows (not a PNG/JPEG, a
            decompression bomb, a zero-size side); a truncated or corrupt pixel stream is found
            only when :func:`read_photo` decodes it.
    """
    with _decoding_errors():
        with Image.open(Path(path), formats=_FORMATS) as opened:
            mode, (width, height) = opened.mode, opened.size
        _check_has_pixels(width, height)
    return mode, _source_dtype(mode)


def _check_has_pixels(width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise PhotoError(
            f"the image is {width}x{height} px; it holds no pixels.",
            "export the photograph again, or remove it from the raw data folder.",
        )


@contextmanager
def _decoding_errors() -> Iterator[None]:
    """Turn whatever Pillow raises on a bad file into a :class:`PhotoError` with its fix."""
    try:
        yield
    except PhotoError:
        raise
    except Image.DecompressionBombError as exc:
        raise PhotoError(
            f"the image is too large to decode safely ({_one_line(exc)}).",
            "downscale the photograph, or, if the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS"
            " before running ingestion.",
        ) from exc
    except UnidentifiedImageError as exc:
        raise PhotoError(
            "the file is not a PNG or JPEG image (Pillow does not recognise its contents).",
            "export it again as PNG or JPEG, or give it the suffix of its real format, or move it"
            " out of the raw data folder.",
        ) from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise PhotoError(
            f"the image data cannot be decoded; the file is truncated or corrupt ({_one_line(exc)}).",
            "copy or download the photograph again.",
        ) from exc
    except Exception as exc:  # Pillow's decoders raise many types on hostile bytes
        raise PhotoError(
            f"Pillow cannot decode the image ({type(exc).__name__}: {_one_line(exc)}).",
            "open and re-save the photograph as PNG or JPEG, or remove it from the raw data folder.",
        ) from exc


def _source_dtype(mode: str) -> str:
    """The sample type in the file of a Pillow mode: 16-bit grey, 1-bit, else 8-bit."""
    if mode in _SIXTEEN_BIT_MODES:
        return "uint16"
    return "bool" if mode == "1" else "uint8"


def _as_rgb_family(image: Image.Image, source_mode: str) -> tuple[Image.Image, str, float]:
    """The image in a mode Pillow resizes and NumPy reads as RGB, RGBA or 16-bit grey ("I"),
    with the source sample type and the divisor that maps its values to [0, 1]."""
    source_dtype = _source_dtype(image.mode)
    if source_dtype == "uint16":
        # "I" is Pillow's int32 grey mode: every 16-bit layout lands there, values unchanged.
        return image.convert("I"), "uint16", 65535.0
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            return image.convert("RGBA"), source_dtype, 255.0
        return image.convert("RGB"), source_dtype, 255.0
    except ValueError as exc:
        raise PhotoError(
            f"the image's colour mode {source_mode!r} cannot be converted to RGB ({_one_line(exc)}).",
            "re-save the photograph as an 8-bit RGB, grey or palette PNG/JPEG.",
        ) from exc


def _to_chw_rgb(values: np.ndarray) -> np.ndarray:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA float values -> (3, H, W) in [0, 1]."""
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    elif values.shape[2] == 4:
        values = values[:, :, :3] * values[:, :, 3:]  # composited over black
    # The int32 grey path can overshoot [0, 65535] after Lanczos; 8-bit is clamped by Pillow.
    np.clip(values, 0.0, 1.0, out=values)
    return np.ascontiguousarray(values.transpose(2, 0, 1))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
