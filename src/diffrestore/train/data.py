"""Random multi-scale crops of real photos, held in memory, for training the default prior.

Why in memory: the training set (431 BSDS photos, about 200 MB as uint8) is decoded once, so a batch costs
a few small resizes instead of JPEG decodes; on a 2-core CPU the model, not the data, must be the
bottleneck. Why multi-scale: the restore command works on 64x64 tiles of photos at their native size, but a
photo downscaled by 2-5x is just as natural (sharper, less JPEG blocking) and multiplies the variety of
content a small data set offers; crops keep the native scale with probability ``p_native`` so the most
common test-time statistics stay well represented.

Every random choice is drawn from one ``torch.Generator`` passed in by the caller, so a training run that
saves and restores that generator's state resumes with exactly the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from diffrestore.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "find_images", "load_images", "CropSampler"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(dirs: Iterable[str | Path]) -> list[Path]:
    """All image files under ``dirs`` (recursive), sorted so the order (and hence a seeded run) is stable."""
    files: list[Path] = []
    for d in dirs:
        p = Path(d).expanduser()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
            continue
        if not p.is_dir():
            raise UserError(f"training data folder not found: {p}")
        files.extend(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    files = sorted(set(files))
    if not files:
        raise UserError("no training images (jpg/png/...) found in: " + ", ".join(str(d) for d in dirs))
    return files


def _load_rgb_uint8(path: Path, min_side: int, max_side: int | None) -> torch.Tensor:
    """Decode one photo to ``[3, H, W]`` uint8, upright (EXIF), RGB, resized into the allowed side range.

    Images smaller than a crop are upscaled once here (rare); very large ones may be capped so that one
    panorama cannot eat the memory budget.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr16 = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(arr16 / max(arr16.max(), 1.0) * 255.0, 0, 255).astype(np.uint8))
            im = im.convert("RGB")
            w, h = im.size
            scale = 1.0
            if min(w, h) < min_side:
                scale = min_side / min(w, h)
            elif max_side is not None and max(w, h) > max_side:
                scale = max_side / max(w, h)
            if scale != 1.0:
                size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
                im = im.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read training image {path}: {e}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_images(
    files: Sequence[Path], min_side: int, max_images: int | None = None, max_side: int | None = 2048
) -> list[torch.Tensor]:
    """Decode ``files`` (at most ``max_images``, taken in sorted order) into uint8 tensors."""
    if max_images is not None:
        files = list(files)[: max(1, max_images)]
    return [_load_rgb_uint8(f, min_side, max_side) for f in files]


class CropSampler:
    """Draws batches of ``size`` x ``size`` crops in [-1, 1] from in-memory uint8 photos.

    Per sample: a photo (uniformly), a scale ``s`` (1 with probability ``p_native``, else log-uniform in
    ``[max(size/min_side, min_scale), 1]`` so each octave is equally likely), a square window of side
    ``round(size/s)`` at a uniform position, an antialiased bicubic resize of that window to ``size``
    (equivalent to downscaling the whole photo and cropping, at a fraction of the cost), then random
    horizontal flip (and optionally vertical flip / 90-degree rotation). Flips, rotations and the
    mapping to [-1, 1] are applied to the whole batch at once.
    """

    def __init__(
        self,
        images: list[torch.Tensor],
        size: int,
        *,
        min_scale: float = 0.0,
        p_native: float = 0.5,
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
    ) -> None:
        if not images:
            raise UserError("no training images loaded")
        self.images = images
        self.size = int(size)
        self.min_scale = float(min_scale)
        self.p_native = float(p_native)
        self.hflip, self.vflip, self.rot90 = hflip, vflip, rot90

    def __len__(self) -> int:
        return len(self.images)

    def _crop(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One crop as float32 ``[3, size, size]`` in [0, 255]."""
        size = self.size
        _, h, w = img.shape
        smin = min(1.0, max(size / min(h, w), self.min_scale))
        u_native, u_scale, u_top, u_left = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        s = 1.0 if (u_native < self.p_native or smin >= 1.0) else math.exp(math.log(smin) * (1.0 - u_scale))
        c = min(min(h, w), max(size, round(size / s)))
        top = min(h - c, int(u_top * (h - c + 1)))
        left = min(w - c, int(u_left * (w - c + 1)))
        patch = img[:, top : top + c, left : left + c].float()
        if c != size:
            patch = F.interpolate(
                patch[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False
            )[0]
        return patch

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        """A batch ``[n, 3, size, size]`` float32 in [-1, 1] (CPU)."""
        idx = torch.randint(0, len(self.images), (n,), generator=g).tolist()
        x = torch.stack([self._crop(self.images[i], g) for i in idx])
        x = x.clamp_(0.0, 255.0).div_(127.5).sub_(1.0)
        if self.hflip:
            m = torch.rand(n, generator=g) < 0.5
            x = torch.where(m[:, None, None, None], x.flip(-1), x)
        if self.vflip:
            m = torch.rand(n, generator=g) < 0.5
            x = torch.where(m[:, None, None, None], x.flip(-2), x)
        if self.rot90:
            m = torch.rand(n, generator=g) < 0.5
            x = torch.where(m[:, None, None, None], x.transpose(-1, -2), x)
        return x.contiguous()
