"""Images in and out of the demo: reading uploads safely, heat-map overlays, patch crops.

No Gradio here: these are plain functions on PIL images and numpy arrays.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image

#: Uploads larger than this on either side are downscaled first (the models see 64-448 px anyway).
MAX_SIDE = 1024
#: Pixel count above which an upload is refused before decoding (a decompression bomb, not a photo).
MAX_PIXELS = 64_000_000

#: Anchor colours of the heat-map colour scale, dark to bright (a short "inferno"-like ramp).
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def load_image(value: Any, max_side: int = MAX_SIDE) -> Image.Image:
    """An RGB PIL image from an upload: a file path, a PIL image or an HWC array.

    Grayscale, palette, RGBA (composited on white) and 16-bit images become 8-bit RGB; images
    larger than ``max_side`` on either side are downscaled (aspect kept).

    Raises:
        ValueError: the value is missing or is not an image, with what to do instead.

    Example:
        >>> Image.new("L", (32, 32)).save("photo.png")           # a grayscale file
        >>> load_image("photo.png").mode
        'RGB'
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("no image: upload a PNG or JPEG file, or pick a sample scene")
    if isinstance(value, dict) and "path" in value:  # a Gradio FileData payload
        value = value["path"]
    if isinstance(value, (str, os.PathLike)):
        name = os.path.basename(str(value))
        try:
            with Image.open(value) as probe:
                width, height = probe.size
                if width * height > MAX_PIXELS:
                    raise ValueError(f"{name} is {width}x{height} pixels, too large to read safely; "
                                     f"resize it below {MAX_PIXELS // 1_000_000} megapixels and upload it again")
                probe.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
                image = probe.copy()
        except FileNotFoundError:
            raise ValueError(f"cannot find {value}; upload the image again") from None
        except (Image.UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
            raise ValueError(f"{name} is not an image this app can read ({type(err).__name__}); "
                             "upload a PNG, JPEG, WebP, GIF or BMP file") from None
    elif isinstance(value, Image.Image):
        image = value
    elif isinstance(value, np.ndarray):
        if value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[-1] not in (1, 3, 4)) or value.size == 0:
            raise ValueError(f"an image array must be [height, width] or [height, width, 1|3|4], got shape {value.shape}")
        array = value if value.dtype == np.uint8 else np.clip(value, 0, 255).astype(np.uint8)
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    else:
        raise ValueError(f"expected an image file path, a PIL image or an array, got {type(value).__name__}")
    return _to_rgb(image, max_side)


def _to_rgb(image: Image.Image, max_side: int) -> Image.Image:
    if image.width < 1 or image.height < 1:
        raise ValueError(f"the image is empty ({image.width}x{image.height}); upload another one")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit grayscale: scale to 8 bits
        a = np.asarray(image, dtype=np.float64)
        span = a.max() - a.min()
        image = Image.fromarray(((a - a.min()) / (span if span > 0 else 1) * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def model_view(image: Image.Image, processor: Any) -> Image.Image:
    """The part of ``image`` the model's image processor keeps: the central square when it
    centre-crops (CLIP: resize the short side, then crop), the whole image when it resizes to a
    square (SigLIP). Patch heat maps line up with this view, not with the uploaded image.

    Example:
        >>> import sith_lens as sl
        >>> model = sl.load_clip("toy")
        >>> model_view(Image.new("RGB", (300, 200)), model.image_processor).size    # CLIP
        (200, 200)
    """
    if not getattr(processor, "do_center_crop", False):
        return image
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def for_display(image: Image.Image, min_side: int = 256) -> Image.Image:
    """A small image scaled up (nearest neighbour, so pixels stay sharp) until its short side is
    at least ``min_side``; larger images are returned as they are.

    Example:
        >>> for_display(Image.new("RGB", (64, 64))).size
        (256, 256)
    """
    scale = -(-min_side // max(1, min(image.size)))
    if scale <= 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def colorize(heat: Float[np.ndarray, "h w"], vmax: float | None = None) -> UInt8[np.ndarray, "h w 3"]:
    """Map values in ``[0, vmax]`` (default: the maximum) to the colour ramp; negatives count as 0.

    Example:
        >>> colorize(np.eye(2)).shape
        (2, 2, 3)
    """
    heat = np.asarray(heat, dtype=np.float64)
    top = float(heat.max()) if vmax is None else float(vmax)
    t = np.clip(heat / top, 0, 1) if top > 0 else np.zeros_like(heat)
    pos = t * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def overlay(image: Image.Image, heat: Float[np.ndarray, "g g"], alpha: float = 0.6, size: int = 256,
            vmax: float | None = None) -> Image.Image:
    """The image (squared to ``size`` px) under a patch-grid heat map, blended with ``alpha``.

    Example:
        >>> overlay(Image.new("RGB", (64, 64)), np.random.rand(8, 8)).size
        (256, 256)
    """
    base = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    colours = Image.fromarray(colorize(heat, vmax)).resize((size, size), Image.Resampling.NEAREST)
    return Image.blend(base, colours, alpha)


def patch_crop(image: Image.Image, row: int, col: int, grid: int, context: int = 1, size: int = 96) -> Image.Image:
    """The patch at ``(row, col)`` of a ``grid`` x ``grid`` image with ``context`` patches around it,
    the patch itself outlined in yellow, scaled to ``size`` px.

    Example:
        >>> patch_crop(Image.new("RGB", (64, 64)), 2, 3, grid=8).size
        (96, 96)
    """
    if not (0 <= row < grid and 0 <= col < grid):
        raise ValueError(f"patch ({row}, {col}) is outside the {grid}x{grid} grid")
    w, h = image.size
    pw, ph = w / grid, h / grid
    r0, r1 = max(0, row - context), min(grid, row + context + 1)
    c0, c1 = max(0, col - context), min(grid, col + context + 1)
    crop = np.array(image.convert("RGB").crop((round(c0 * pw), round(r0 * ph), round(c1 * pw), round(r1 * ph))))
    # outline the patch itself
    y0, y1 = round((row - r0) * ph), round((row - r0 + 1) * ph) - 1
    x0, x1 = round((col - c0) * pw), round((col - c0 + 1) * pw) - 1
    yellow = np.array([255, 230, 0], dtype=np.uint8)
    crop[y0, x0 : x1 + 1] = crop[y1, x0 : x1 + 1] = yellow
    crop[y0 : y1 + 1, x0] = crop[y0 : y1 + 1, x1] = yellow
    return Image.fromarray(crop).resize((size, size), Image.Resampling.NEAREST)
