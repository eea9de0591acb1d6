"""Safe image decoding: any file Pillow reads becomes an 8-bit RGB or greyscale image.

Pixel counts are capped before decoding (decompression bombs), EXIF orientation is applied, and
CMYK, palette, 16-bit and alpha images are converted the same way in training and prediction.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidInputError, KeymodelsError

# PIL's own warning threshold (~89 Mpx, a 9458×9458 image); the cap is checked from the header,
# before a single pixel is decoded.
MAX_PIXELS = 89_478_485
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class ImageDecodeError(KeymodelsError):
    """An image file that cannot be decoded (corrupt, truncated, too large, not an image)."""


def load_image(
    path: str | os.PathLike,
    mode: str = "RGB",
    max_pixels: int = MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode ``path`` into a fully loaded ``mode`` ("RGB" or "L") image.

    Args:
        path: an image file in any format Pillow reads.
        mode: "RGB" (3 channels) or "L" (1 channel, greyscale).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        background: colour that transparent pixels are composited over.

    Raises:
        ImageDecodeError: naming the file, if it is unreadable, truncated or over ``max_pixels``.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageDecodeError(
            f"{path} is a folder, not an image file; pass the images in it (e.g. {path}/*.png)"
        )
    if not path.is_file():
        raise ImageDecodeError(f"no image file at {path}")
    return _decode(path, str(path), mode, max_pixels, background)


def decode_image(
    data: bytes,
    name: str = "the upload",
    mode: str = "RGB",
    max_pixels: int = MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """:func:`load_image` for an image held in memory (an upload); ``name`` is for messages.

    Raises:
        ImageDecodeError: naming ``name``, if the bytes are empty, not an image, truncated or over
            ``max_pixels``.
    """
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty (0 bytes); send an image file")
    return _decode(io.BytesIO(data), name, mode, max_pixels, background)


def _decode(
    source: Path | io.BytesIO,
    name: str,
    mode: str,
    max_pixels: int,
    background: tuple[int, int, int],
) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageDecodeError(
                        f"{name}: {w}×{h} = {w * h:,} pixels is over the pixel cap of {max_pixels:,} "
                        "(a decompression bomb, or an image far too large to train on); "
                        "resize it or raise max_pixels"
                    )
                im.load()
                return to_mode(ImageOps.exif_transpose(im), mode, background)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own check, in Image.open, for sizes beyond its limits.
        raise ImageDecodeError(
            f"{name}: over the pixel cap ({e}); a decompression bomb, or an image far too large "
            "to train on; resize it"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError(
            f"{name}: cannot decode image: it is in no image format Pillow reads (not an image?); "
            "send a PNG, JPEG or another image file"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(
            f"{name}: cannot decode image ({type(e).__name__}: {e}); the file is corrupt, "
            "truncated or not an image"
        ) from e


def to_mode(
    im: Image.Image, mode: str = "RGB", background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit ``mode`` ("RGB" or "L").

    16-bit and 32-bit greyscale are rescaled to 0..255 (not clipped), palette and alpha images are
    composited over ``background``, CMYK goes through Pillow's conversion.
    """
    if mode not in ("RGB", "L"):
        raise InvalidInputError(f"mode must be 'RGB' or 'L'; got {mode!r}")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        # 16-bit images use 0..65535; a float or 32-bit image is scaled by its own range.
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F" and a.max() <= 1.0:
            top = 1.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        im = Image.alpha_composite(canvas, rgba)
    return im.convert(mode) if im.mode != mode else im
