"""Uploaded images: bounded in size before they are read, decoded by Pillow or refused.

:class:`BodyLimit` is an ASGI middleware: a request whose ``Content-Length`` exceeds the
limit gets HTTP 413 before a byte of its body is read, and a body without a length is
counted as it streams and cut off at the limit. :func:`decode_image` accepts PNG and JPEG
only (what Pillow finds in the bytes, not the file name or the declared type) and turns
the picture into the model's input: its channels, resized to its input size.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from ..errors import InputError

FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 40_000_000  # larger pictures are refused (a decompression bomb costs no memory)


def decode_image(data: bytes, *, channels: int, size: tuple[int, int]) -> np.ndarray:
    """PNG / JPEG bytes -> uint8 ``[H, W, C]`` with ``channels`` (1 or 3), resized to ``size``.

    Anything Pillow cannot decode as PNG or JPEG raises :class:`InputError`.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise InputError(
                        f"the image is {img.width}x{img.height} pixels; at most "
                        f"{MAX_PIXELS:,} are accepted"
                    )
                img.load()
                picture = img.convert("L" if channels == 1 else "RGB")
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("the upload is not a PNG or JPEG image Pillow can decode") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise InputError(f"the PNG / JPEG upload is damaged: {exc}") from None
    height, width = size
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def to_input(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[H, W, C]`` -> float32 ``[1, C, H, W]`` normalised with the model's mean / std."""
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - m) / s
    return x.contiguous()


class BodyLimit:
    """ASGI middleware: request bodies over ``max_bytes`` get HTTP 413, unread."""

    def __init__(self, app, max_bytes: int, message: str = "the request body is too large") -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.message = message

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        limit = self.max_bytes
        too_large = self.message
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await JSONResponse({"detail": "bad Content-Length"}, 400)(scope, receive, send)
                return
            if declared > limit:  # refused before reading the body
                await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
                return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI passes an HTTPException from the body through
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted, send)
