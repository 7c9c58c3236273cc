"""Decoding, channel conversion and resizing of single images, shared by the loaders and their
``preprocess`` functions, so that outside images are prepared exactly like a data set's own.

An image source is a file path, the file's bytes, a ``PIL.Image.Image``, or a uint8 array ``(H, W)`` or
``(H, W, C)`` with ``C`` of 1, 3 or 4 (grey, RGB, RGBA). A boolean array, which is what ``numpy.asarray``
gives for a 1-bit image such as an Omniglot PNG, is read as 0 (False) and 255 (True), as Pillow reads the
1-bit file itself.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jmeta.validation import one_of, positive_int

RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}
CHANNELS = {1: "L", 3: "RGB"}


def open_image(source: Any, draft: tuple[int, int] | None = None) -> Image.Image:
    """Opens one image source (see the module docstring) as a PIL image, fully read.

    ``draft=(width, height)`` lets a JPEG file decode at a reduced scale no smaller than that (faster,
    and what mini-ImageNet's loader does). Raises ValueError naming the source when it cannot be decoded.

    Example::

        >>> import numpy as np
        >>> open_image(np.zeros((4, 5), np.uint8)).size
        (5, 4)
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.dtype == np.bool_:
            source = source.astype(np.uint8) * np.uint8(255)
        if (
            source.dtype != np.uint8
            or source.ndim not in (2, 3)
            or (source.ndim == 3 and source.shape[-1] not in (1, 3, 4))
        ):
            raise ValueError(
                f"an image array must be uint8 (or boolean, read as 0/255) of shape (H, W) or (H, W, C) with C of "
                "1, 3 or 4; got "
                f"{source.dtype} of shape {source.shape}."
            )
        return Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source)
    try:
        if isinstance(source, bytes | bytearray):
            image = Image.open(io.BytesIO(source))
        elif isinstance(source, str | Path):
            image = Image.open(source)
        else:
            raise TypeError(
                f"an image must be a file path, bytes, a PIL image or a uint8 array; got {type(source).__name__}."
            )
        if draft is not None:
            image.draft("RGB", draft)
        image.load()
    except (OSError, SyntaxError) as error:
        where = source if isinstance(source, str | Path) else f"{len(source)} bytes"
        raise ValueError(f"could not decode the image {where} ({type(error).__name__}: {error}).") from error
    return image


def convert(image: Image.Image, channels: int) -> Image.Image:
    """Converts any PIL mode to grey (``channels=1``) or RGB (``channels=3``).

    Transparent pixels (RGBA, LA, or a palette with a transparent colour) are laid over white first, so a
    drawing on a transparent background looks like one on paper.

    Example::

        >>> from PIL import Image
        >>> convert(Image.new("RGBA", (2, 2), (0, 0, 0, 0)), 1).getpixel((0, 0))
        255
    """
    one_of("channels", channels, tuple(CHANNELS))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(CHANNELS[channels])


def image_shape(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` (one int for a square, or ``(height, width)``) as ``(height, width)``.

    Example::

        >>> image_shape(28), image_shape((32, 48))
        ((28, 28), (32, 48))
    """
    sizes = (image_size, image_size) if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if isinstance(sizes, str) or not isinstance(sizes, Sequence) or len(sizes) != 2:
        raise ValueError(f"image_size must be an int or (height, width); got {image_size!r}.")
    return positive_int("image_size[0]", sizes[0]), positive_int("image_size[1]", sizes[1])


def prepare(source: Any, size: tuple[int, int], channels: int, resample: str, *, draft: bool = False) -> np.ndarray:
    """Decodes, converts and resizes one image to uint8 ``(height, width, channels)``; ``draft`` as in
    :func:`open_image`, at ``size``.

    Example::

        >>> import numpy as np
        >>> prepare(np.zeros((10, 20, 3), np.uint8), (8, 8), 1, "box").shape
        (8, 8, 1)
    """
    height, width = size
    image = convert(open_image(source, (width, height) if draft else None), channels)
    if image.size != (width, height):
        image = image.resize((width, height), RESAMPLE[one_of("resample", resample, tuple(RESAMPLE))])
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


def as_batch(images: Any) -> list[Any]:
    """A batch of image sources as a list: a sequence of sources, a uint8 (or boolean) array ``(N, H, W)`` or
    ``(N, H, W, C)``, or a single path, bytes or PIL image (a batch of one).

    Example::

        >>> import numpy as np
        >>> len(as_batch(np.zeros((3, 8, 8), np.uint8))), len(as_batch("one.png"))
        (3, 1)
    """
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(
                f"an array of images must have shape (N, H, W) or (N, H, W, C); got shape {images.shape}. "
                "Add a leading axis for one image: images[None]."
            )
        return list(images)
    if isinstance(images, str | Path | bytes | bytearray | Image.Image):
        return [images]
    return list(images)
