"""Per-image work shared by the builder and the reader: channel conversion, the official geometric
transforms (docs/algorithm.md "Dataset format"), PNG encode and the batch decode used inside Ray Data.

Images travel as numpy uint8 arrays: HWC while being built, CHW (`[C, H, W]`) once decoded for training.
"""

from __future__ import annotations

import io

import numpy as np
import PIL.Image

# Extensions PIL can open, as the official loader accepts "all files with a PIL image extension" (docs/algorithm.md "Dataset format").
PIL.Image.init()
IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in PIL.Image.EXTENSION)

# zlib level of the PNGs in the shards. Level 1 inflates almost as fast as the official stored PNGs
# (level 0) while the shards are ~2-4x smaller, which matters more when they stream from object storage.
PNG_COMPRESS_LEVEL = 1

TRANSFORMS = ("none", "center-crop", "center-crop-wide")
_GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}


def has_alpha(img: PIL.Image.Image) -> bool:
    """True when the image carries transparency (an alpha band or a transparent palette entry/colour)."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return "transparency" in img.info


def native_channels(img: PIL.Image.Image) -> int:
    """The channel count an image has by nature: 1 (grayscale), 3 (colour) or 4 (colour with alpha).
    Grayscale with alpha counts as 1: it is composited on white like every other alpha image."""
    if img.mode in _GRAY_MODES or img.mode in ("LA", "La"):
        return 1
    if img.mode == "P" and img.palette is not None and img.palette.mode in ("L", "LA"):
        return 1
    return 4 if has_alpha(img) else 3


def to_channels(img: PIL.Image.Image, channels: int) -> PIL.Image.Image:
    """Convert to `channels` (1 -> mode L, 3 -> RGB, 4 -> RGBA). Transparent pixels are composited on white
    when the alpha channel is dropped, so transparent backgrounds do not turn black."""
    if channels == 4:
        return img if img.mode == "RGBA" else img.convert("RGBA")
    if has_alpha(img):
        rgba = img.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = PIL.Image.alpha_composite(white, rgba)
    if channels == 3:
        return img if img.mode == "RGB" else img.convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit/float grayscale: rescale to 8 bits rather than clip (PIL's convert("L") clips at 255).
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return PIL.Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return img if img.mode == "L" else img.convert("L")


def transform_image(img: PIL.Image.Image, transform: str, width: int | None, height: int | None):
    """Apply the official dataset-tool transform (docs/algorithm.md "Dataset format"); returns a PIL image, or a reason string when
    the image must be dropped.

    - "none": resize to width x height with LANCZOS when a resolution is given (aspect ratio not kept),
      else keep the image as it is.
    - "center-crop": crop the central square, resize to width x height.
    - "center-crop-wide": crop the centre to the target aspect ratio, resize to width x height, paste it
      centred on a black width x width canvas; images narrower than width, or whose crop would be lower
      than height, are dropped ("too small").
    """
    w, h = img.size
    if transform == "none":
        if width is None or (w, h) == (width, height):
            return img
        return img.resize((width, height), PIL.Image.Resampling.LANCZOS)
    if transform == "center-crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
        return img if (side, side) == (width, height) else img.resize((width, height), PIL.Image.Resampling.LANCZOS)
    if transform == "center-crop-wide":
        crop_h = int(round(w * height / width))  # the image's height at the target aspect ratio
        if w < width or crop_h < height or crop_h > h:
            return f"too small for center-crop-wide {width}x{height}: {w}x{h}"
        top = (h - crop_h) // 2
        img = img.crop((0, top, w, top + crop_h)).resize((width, height), PIL.Image.Resampling.LANCZOS)
        canvas = PIL.Image.new(img.mode, (width, width), 0)
        canvas.paste(img, (0, (width - height) // 2))
        return canvas
    raise ValueError(f"unknown transform {transform!r}; expected one of {', '.join(TRANSFORMS)}")


def encode_png(img: PIL.Image.Image) -> bytes:
    """PNG bytes of an L, RGB or RGBA image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


_MODE_OF_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}


def decode_png_into(data: bytes, out: np.ndarray) -> None:
    """Decode one shard PNG into `out`, a uint8 view `[H, W, C]` (C = 1, 3 or 4) of the batch array.

    Raises ValueError when the bytes are not a PNG of exactly that size and channel count: a shard written
    by this package never holds one, so such a sample is corrupt.
    """
    height, width, channels = out.shape
    with PIL.Image.open(io.BytesIO(data), formats=("PNG",)) as img:
        if img.size != (width, height) or img.mode != _MODE_OF_CHANNELS[channels]:
            raise ValueError(f"expected a {width}x{height} {_MODE_OF_CHANNELS[channels]} PNG, "
                             f"found {img.size[0]}x{img.size[1]} {img.mode}")
        img.load()
        # One copy, straight from PIL's buffer into the batch array (np.asarray would add another).
        out[...] = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(height, width, channels)
