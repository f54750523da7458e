"""Image I/O: bit depths, modes, EXIF orientation, masks, bad files, atomic writes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from diffrestore.errors import UserError
from diffrestore.io import images
from diffrestore.io.images import read_image, read_mask, write_float, write_image


def _png16(path: Path, a: np.ndarray, exif: bytes | None = None) -> None:
    """Minimal 16-bit PNG writer (Pillow cannot write 16-bit RGB); optional eXIf chunk."""
    h, w, c = a.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + (chunk(b"eXIf", exif) if exif else b"") + chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))


def _rgb8(h: int = 5, w: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _exif(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def test_png8_rgb_exact(tmp_path: Path) -> None:
    a = _rgb8()
    Image.fromarray(a).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(torch.round(x[0].permute(1, 2, 0) * 255).to(torch.uint8), torch.from_numpy(a))


def test_grey_8_and_16_bit(tmp_path: Path) -> None:
    g8 = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    Image.fromarray(g8).save(tmp_path / "g8.png")
    x = read_image(tmp_path / "g8.png")
    assert x.shape == (1, 3, 5, 7)
    assert torch.equal(x[0, 0], x[0, 2]) and torch.allclose(x[0, 1] * 255, torch.from_numpy(g8).float())
    g16 = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1871 + 3).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    x = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(x[0, 1].numpy(), g16 / 65535.0, atol=1e-7)
    Image.fromarray(g8 > 100).save(tmp_path / "b1.png")  # mode "1"
    x = read_image(tmp_path / "b1.png")
    assert set(x.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_png16_multichannel_keeps_precision(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 65536, (4, 6, channels), dtype=np.uint16)
    a[0, 0] = [0, 65535, 1, 257][:channels]
    _png16(tmp_path / "c.png", a)
    x = read_image(tmp_path / "c.png")
    colour = a[..., :3] if channels >= 3 else np.repeat(a[..., :1], 3, axis=2)
    atol = 1e-7 if channels >= 3 else 1 / 255  # 16-bit grey+alpha: Pillow offers 8 bits only (documented)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), colour / 65535.0, atol=atol)


def test_tiff16_rgb_keeps_precision(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    a = np.random.default_rng(2).integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", a)
    x = read_image(tmp_path / "c.tif")
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), a / 65535.0, atol=1e-7)


def test_rgba_and_palette_drop_alpha(tmp_path: Path) -> None:
    a = _rgb8()
    alpha = np.zeros((5, 7, 1), np.uint8)  # fully transparent: colour is still what we read
    Image.fromarray(np.concatenate([a, alpha], 2), "RGBA").save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (1, 3, 5, 7)
    assert torch.equal(torch.round(x[0].permute(1, 2, 0) * 255).to(torch.uint8), torch.from_numpy(a))
    Image.fromarray(a).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (1, 3, 5, 7)
    Image.fromarray(a[..., 0]).convert("LA").save(tmp_path / "la.png")
    x = read_image(tmp_path / "la.png")
    assert torch.allclose(x[0, 0] * 255, torch.from_numpy(a[..., 0]).float())


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_rgb8()).convert("CMYK").save(tmp_path / "c.jpg")
    x = read_image(tmp_path / "c.jpg")
    assert x.shape == (1, 3, 5, 7) and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    a = _rgb8()
    Image.fromarray(a).save(tmp_path / "o.png", exif=_exif(orientation))
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    if orientation in (5, 6, 7, 8):
        assert want.shape[:2] == (7, 5)
    x = read_image(tmp_path / "o.png")
    assert np.array_equal(np.round(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), want)
    # the 16-bit path orients with its own code: must agree with Pillow's
    _png16(tmp_path / "o16.png", a.astype(np.uint16) * 257, exif=_exif(orientation))
    x16 = read_image(tmp_path / "o16.png")
    np.testing.assert_allclose(x16[0].permute(1, 2, 0).numpy(), want / 255.0, atol=1e-6)


def test_exif_rotation_jpeg(tmp_path: Path) -> None:
    a = np.zeros((8, 16, 3), np.uint8)
    a[:, :8] = 255  # left half white
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=_exif(6), quality=100)  # 6: rotate 90 deg clockwise
    x = read_image(tmp_path / "r.jpg")
    assert x.shape == (1, 3, 16, 8)
    assert x[0, :, :8].mean() > 0.9 and x[0, :, 8:].mean() < 0.1  # left half became the top half


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image not found"):
        read_image(tmp_path / "none.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(UserError, match="not an image file"):
        read_image(tmp_path / "text.png")
    with pytest.raises(UserError, match="not a file"):
        read_image(tmp_path)
    Image.fromarray(_rgb8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        read_image(tmp_path / "trunc.png")
    assert "\n" not in str(e.value)


def test_mask_conventions(tmp_path: Path) -> None:
    m = np.zeros((5, 7), np.uint8)
    m[:, :3] = 255  # white = known
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", (1, 3, 5, 7))
    assert mask.dtype == torch.bool and mask.shape == (1, 1, 5, 7)
    assert mask[..., :3].all() and not mask[..., 3:].any()
    Image.fromarray(np.stack([m] * 3, 2)).save(tmp_path / "m.jpg", quality=70)  # JPEG noise stays binary
    assert torch.equal(read_mask(tmp_path / "m.jpg", (5, 7)), mask)
    rgba = np.full((5, 7, 4), 255, np.uint8)
    rgba[:, 3:, 3] = 0  # transparent = hole
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m_rgba.png")
    assert torch.equal(read_mask(tmp_path / "m_rgba.png", (5, 7)), mask)
    with pytest.raises(UserError, match="mask .* is 7x5 but the image is 8x5"):
        read_mask(tmp_path / "m.png", (5, 8))


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp"])
def test_write_lossless_round_trip(tmp_path: Path, suffix: str) -> None:
    x = torch.rand(1, 3, 6, 9)
    write_image(tmp_path / f"o{suffix}", x)
    y = read_image(tmp_path / f"o{suffix}")
    assert torch.equal(y, torch.round(x * 255) / 255)
    assert [p.name for p in tmp_path.iterdir()] == [f"o{suffix}"]


def test_write_clamps_jpeg_and_grey(tmp_path: Path) -> None:
    x = torch.tensor([-1.0, 0.5, 2.0, float("nan")]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    write_image(tmp_path / "c.png", x)
    assert np.asarray(Image.open(tmp_path / "c.png"))[..., 0].tolist() == [[0, 128], [255, 0]]
    write_image(tmp_path / "c.jpg", torch.rand(3, 16, 16))
    assert Image.open(tmp_path / "c.jpg").format == "JPEG"
    write_image(tmp_path / "g.png", torch.rand(16, 16))
    assert Image.open(tmp_path / "g.png").mode == "L"


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unsupported image extension"):
        write_image(tmp_path / "o.xyz", torch.rand(1, 3, 4, 4))
    with pytest.raises(UserError, match="output directory does not exist"):
        write_image(tmp_path / "nope" / "o.png", torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError):
        write_image(tmp_path / "o.png", torch.rand(2, 3, 4, 4))
    assert list(tmp_path.iterdir()) == [] or all(p.is_dir() for p in tmp_path.iterdir())


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "o.png"
    write_image(target, torch.zeros(1, 3, 4, 4))
    before = target.read_bytes()

    def broken_save(self, fp, format=None, **kw):  # noqa: A002 - Pillow's signature
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images.Image.Image, "save", broken_save)
    with pytest.raises(UserError, match="cannot write image"):
        write_image(target, torch.ones(1, 3, 4, 4))
    with pytest.raises(UserError, match="cannot write image"):
        write_image(tmp_path / "new.png", torch.ones(1, 3, 4, 4))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_write_float_npy(tmp_path: Path) -> None:
    x = torch.randn(1, 3, 4, 5)
    write_float(tmp_path / "x.npy", x)
    assert np.array_equal(np.load(tmp_path / "x.npy"), x.numpy())
    write_float(tmp_path / "b.npy", x.bfloat16())
    assert np.load(tmp_path / "b.npy").dtype == np.float32
    with pytest.raises(UserError, match="use .npy"):
        write_float(tmp_path / "x.txt", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npy", "x.npy"]
