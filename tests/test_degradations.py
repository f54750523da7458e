"""On-the-fly LR synthesis for ResShift training: MATLAB bicubic and the second-order realistic pipeline."""

from __future__ import annotations

import pytest
import torch

from diffrestore.errors import UserError
from diffrestore.metrics import imresize
from diffrestore.train.degradations import (
    add_noise,
    bicubic_lr,
    blur,
    jpeg,
    make_lr,
    random_gaussian_kernels,
    realistic_lr,
)


def _hr(b: int = 3, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)


def test_bicubic_lr_is_matlab_imresize_in_8_bits() -> None:
    hr = _hr()
    lr = bicubic_lr(hr, 4)
    assert lr.shape == (3, 3, 8, 12)
    want = imresize(hr, scale=0.25).clamp(0, 1)
    assert torch.allclose(lr, (want * 255).round() / 255, atol=1e-6)
    assert torch.allclose(lr * 255, (lr * 255).round(), atol=1e-4)  # 8-bit levels
    assert not torch.allclose(lr, torch.nn.functional.avg_pool2d(hr, 4), atol=1e-3)  # not a box filter
    with pytest.raises(UserError):
        bicubic_lr(_hr(h=30), 4)


def test_kernels_and_blur() -> None:
    g = torch.Generator().manual_seed(1)
    k = random_gaussian_kernels(5, 11, (0.5, 3.0), g, p_aniso=0.0)
    assert k.shape == (5, 11, 11)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(5), atol=1e-5)
    assert torch.allclose(k, k.flip(-1), atol=1e-6) and torch.allclose(k, k.transpose(-1, -2), atol=1e-6)
    ka = random_gaussian_kernels(64, 11, (0.5, 3.0), torch.Generator().manual_seed(1), p_aniso=1.0)
    assert not all(torch.allclose(x, x.transpose(-1, -2), atol=1e-4) for x in ka)  # some are elongated
    again = random_gaussian_kernels(5, 11, (0.5, 3.0), torch.Generator().manual_seed(1), p_aniso=0.0)
    assert torch.equal(k, again)
    x = _hr(b=2)
    delta = torch.zeros(2, 5, 5)
    delta[:, 2, 2] = 1
    assert torch.allclose(blur(x, delta), x, atol=1e-6)
    # per-image kernels: image 0 blurred, image 1 untouched
    mixed = torch.stack([random_gaussian_kernels(1, 5, (2.0, 2.0), g)[0], delta[1]])
    y = blur(x, mixed)
    assert torch.allclose(y[1], x[1], atol=1e-6) and not torch.allclose(y[0], x[0], atol=1e-3)


def test_noise_and_jpeg() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.full((2, 3, 64, 64), 0.5)
    y = add_noise(x, torch.tensor([0.1, 0.02]), torch.tensor([True, False]), g)
    n = y - x
    assert torch.allclose(n[0, 0], n[0, 1]) and not torch.allclose(n[1, 0], n[1, 1])
    assert abs(float(n[0].std()) - 0.1) < 0.01 and abs(float(n[1].std()) - 0.02) < 0.003
    img = _hr(b=2, h=32, w=32)
    hi, lo = jpeg(img, [95, 10])
    assert hi.shape == img.shape[1:] and float(hi.min()) >= 0 and float(hi.max()) <= 1
    assert float((hi - img[0]).abs().mean()) < float((lo - img[1]).abs().mean())


def test_realistic_pipeline_is_seeded_and_per_sample() -> None:
    hr = _hr(b=4, h=64, w=64)
    a = realistic_lr(hr, 4, torch.Generator().manual_seed(7))
    b = realistic_lr(hr, 4, torch.Generator().manual_seed(7))
    c = realistic_lr(hr, 4, torch.Generator().manual_seed(8))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.allclose(a * 255, (a * 255).round(), atol=1e-4)
    same = realistic_lr(hr[:1].expand(4, -1, -1, -1).contiguous(), 4, torch.Generator().manual_seed(7))
    assert not torch.allclose(same[0], same[1], atol=1e-3)  # each sample gets its own blur/noise
    assert torch.equal(make_lr(hr, 4, "realistic", torch.Generator().manual_seed(7)), a)
    with pytest.raises(UserError):
        make_lr(hr, 4, "gaussian", torch.Generator())
