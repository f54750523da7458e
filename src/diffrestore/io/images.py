"""Image files <-> tensors: the only place that knows about file formats, bit depths and EXIF.

Inside the library an image is a float32 tensor ``[1, 3, H, W]`` in [0, 1]. Reading:
* EXIF orientation is applied (phone photos are stored sideways), so pixels match what viewers show;
* alpha is DROPPED (the stored colour of a transparent pixel is kept) — restoration works on colour only,
  and compositing on a guessed background would invent content the operator then treats as measured;
* greyscale becomes 3 identical channels (the priors are RGB);
* 16-bit files keep their precision (divided by 65535), including 16-bit RGB(A) PNG/TIFF, which Pillow alone
  truncates to 8 bits (16-bit grey+alpha PNGs are the exception: read at 8-bit precision).
Writing is 8-bit PNG/JPEG/TIFF/BMP/WebP chosen by extension, always atomic (temp file + rename), so a failure
never leaves a half-written output.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from diffrestore.errors import UserError
from diffrestore.io.atomic import atomic_path

WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}
_SAVE_OPTIONS: dict[str, dict] = {
    "JPEG": {"quality": 95, "subsampling": 0},  # 4:4:4 — chroma subsampling would blur restored detail
    "WEBP": {"quality": 95},
    "PNG": {"compress_level": 6},
    "TIFF": {},
    "BMP": {},
}
_GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _open(path: Path, what: str) -> Image.Image:
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} is not a file: {path}")
    try:
        with warnings.catch_warnings():  # big photos are our use case: only Pillow's hard limit applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise UserError(f"{path} is too large to decode safely (over {limit} pixels)") from None
    except OSError as e:
        raise UserError(f"cannot open {what} {path}: {e.strerror or e}") from None
    return im


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an ``[H, W, C]`` array the way ``ImageOps.exif_transpose`` does."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.rot90(x, 2).transpose(1, 0, 2),
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _flip_rawmode(raw: str) -> str | None:
    """``RGB;16B`` -> ``RGB;16L`` etc.: decoding with the other byte order yields the LOW bytes."""
    if ";16" not in raw:
        return None
    end = raw[-1]
    if end == "N":
        end = "L" if sys.byteorder == "little" else "B"
    if end not in ("B", "L"):
        return None
    return raw[:-1] + ("L" if end == "B" else "B")


def _read_16bit_multiband(path: Path, im: Image.Image) -> np.ndarray | None:
    """Full-precision decode of 16-bit RGB/RGBA/LA files, which Pillow reduces to their high bytes.

    Pillow decodes such a file through an unpacker that keeps the high byte; decoding it a second time with
    the opposite byte order keeps the low byte instead. Both passes run Pillow's own decoder (filters,
    compression, interlace), so this only recombines bytes. Returns None when the trick does not apply.
    """
    if im.mode not in ("RGB", "RGBA", "LA") or len(getattr(im, "tile", []) or []) != 1:
        return None
    tile = im.tile[0]
    args = tile.args
    raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
    if not isinstance(raw, str):
        return None
    other = _flip_rawmode(raw)
    if other is None:
        return None
    try:
        im.load()
        hi = np.asarray(im).astype(np.uint16)
        with Image.open(path) as im2:
            new_args = other if isinstance(args, str) else (other, *args[1:])
            im2.tile = [tile._replace(args=new_args)]
            im2.load()
            lo = np.asarray(im2).astype(np.uint16)
    except Exception:  # the trick depends on Pillow internals: fall back to the 8-bit decode
        return None
    if hi.shape != lo.shape:
        return None
    return (hi << 8) | lo


def _to_float_array(path: Path, im: Image.Image) -> np.ndarray:
    """Decode to an ``[H, W, C]`` float32 array in [0, 1] (C = 1 grey, 3 colour, +1 if alpha), oriented."""
    deep = _read_16bit_multiband(path, im)  # first: reading EXIF may decode the image (PNG eXIf after IDAT)
    if deep is not None:
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # unreadable EXIF: keep the stored orientation
            orientation = 1
        return _orient(deep.astype(np.float32) / 65535.0, orientation)
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:
        pass
    mode = im.mode
    if mode in _GREY_MODES:
        a = np.asarray(im)
        if mode == "1" or a.dtype == bool:
            a = a.astype(np.float32)
        elif mode == "F":
            a = np.clip(a.astype(np.float32), 0.0, 1.0)
        elif mode.startswith("I"):  # I;16* are 16-bit; plain "I" (32-bit int) is read as 16-bit range too
            a = np.clip(a.astype(np.float32) / 65535.0, 0.0, 1.0)
        else:
            a = a.astype(np.float32) / 255.0
        return a[..., None]
    if mode == "La":
        im = im.convert("LA")
    elif mode in ("RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA", "LA"):
        im = im.convert("RGB")  # P without transparency, CMYK, YCbCr, LAB, HSV, ...
    a = np.asarray(im)
    return a.astype(np.float32) / (65535.0 if a.dtype == np.uint16 else 255.0)


def _decode(path: str | os.PathLike, what: str) -> np.ndarray:
    path = Path(path)
    im = _open(path, what)
    try:
        with im:
            return _to_float_array(path, im)
    except UserError:
        raise
    except Exception as e:  # truncated data, unsupported compression, ...
        raise UserError(f"cannot decode {what} {path}: {e}") from None


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image as float32 ``[1, 3, H, W]`` in [0, 1] (EXIF-oriented, alpha dropped, grey -> RGB)."""
    a = _decode(path, "image")
    c = a.shape[2]
    if c in (2, 4):  # grey+alpha / RGB+alpha: drop alpha
        a = a[..., : c - 1]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()


def read_mask(path: str | os.PathLike, shape: Sequence[int]) -> torch.Tensor:
    """Read an inpainting mask as bool ``[1, 1, H, W]``: True = pixel is KNOWN (kept), False = to restore.

    A pixel is known when its grey level (mean of the colour channels) is above half of full scale, so white
    = keep, black = fill, and JPEG-compressed black/white masks still work. If the file has an alpha channel,
    transparent pixels (alpha below half) are holes too, as drawn in image editors. ``shape`` is the image's
    shape (``(H, W)`` or any shape ending in ``H, W``); a mask of another size is a ``UserError``.
    """
    a = _decode(path, "mask")
    c = a.shape[2]
    colour, alpha = (a[..., : c - 1], a[..., c - 1]) if c in (2, 4) else (a, None)
    known = colour.mean(axis=2) > 0.5
    if alpha is not None:
        known &= alpha > 0.5
    h, w = int(shape[-2]), int(shape[-1])
    if known.shape != (h, w):
        raise UserError(
            f"mask {path} is {known.shape[1]}x{known.shape[0]} but the image is {w}x{h} (width x height)"
        )
    return torch.from_numpy(np.ascontiguousarray(known))[None, None]


def _to_uint8(x01: torch.Tensor) -> np.ndarray:
    x = x01.detach().to("cpu", torch.float32)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"write_image takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"write_image expects [1,C,H,W], [C,H,W] or [H,W], C 1 or 3; got {tuple(x01.shape)}")
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)
    a = torch.round(x * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[2] == 1 else a


def write_image(path: str | os.PathLike, x01: torch.Tensor) -> Path:
    """Write a [0, 1] image (clamped, rounded to 8 bits) as PNG/JPEG/TIFF/BMP/WebP, atomically."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"unsupported image extension {path.suffix or '(none)'!r} for {path} "
                        f"(use {', '.join(WRITE_FORMATS)})")
    img = Image.fromarray(_to_uint8(x01))
    with atomic_path(path) as tmp:
        try:
            img.save(tmp, format=fmt, **_SAVE_OPTIONS[fmt])
        except OSError as e:
            raise UserError(f"cannot write image {path}: {e.strerror or e}") from None
    return path


def write_float(path: str | os.PathLike, x: torch.Tensor) -> Path:
    """Write a tensor losslessly as a ``.npy`` array (bf16/fp16 widened to float32), atomically."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise UserError(f"unsupported array extension {path.suffix or '(none)'!r} for {path} (use .npy)")
    t = x.detach().to("cpu")
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    arr = t.numpy()
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                np.save(f, arr)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def is_16bit(path: str | os.PathLike) -> bool:
    """Whether an image file stores 16 bits per sample (so a result can be offered at 16 bits too)."""
    path = Path(path)
    im = _open(path, "image")
    with im:
        if im.mode.startswith("I;16"):
            return True
        tile = (getattr(im, "tile", None) or [None])[0]
        args = getattr(tile, "args", None) if tile is not None else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        return isinstance(raw, str) and ";16" in raw


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_png16(path: str | os.PathLike, x01: torch.Tensor) -> Path:
    """Write a [0, 1] image as a 16-bit PNG (RGB or grey), atomically.

    Why by hand: Pillow writes 16-bit PNGs for single-channel images only; a 16-bit RGB input deserves a
    16-bit RGB result (``read_image`` reads it back at full precision). The encoder is the plain PNG
    layout: IHDR, one zlib IDAT of filter-0 scanlines of big-endian samples, IEND.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"a 16-bit image is written as .png, not {path.suffix or '(none)'!r}: {path}")
    x = x01.detach().to("cpu", torch.float32)
    x = x[0] if x.dim() == 4 else (x[None] if x.dim() == 2 else x)
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"write_png16 expects [1,C,H,W], [C,H,W] or [H,W], C 1 or 3; got {tuple(x01.shape)}")
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)
    a = np.round(x.permute(1, 2, 0).numpy().astype(np.float64) * 65535.0)
    a = np.ascontiguousarray(a.astype(">u2"))
    h, w, c = a.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), a.view(np.uint8).reshape(h, w * c * 2)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))
    with atomic_path(path) as tmp:
        try:
            Path(tmp).write_bytes(data)
        except OSError as e:
            raise UserError(f"cannot write image {path}: {e.strerror or e}") from None
    return path
