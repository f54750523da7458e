"""SHRED and ADIR through the method contract: ``diffrestore.restore``, the CLI and the tiling layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffrestore.api import restore
from diffrestore.cli.main import main
from diffrestore.errors import UserError
from diffrestore.io.images import write_image
from diffrestore.methods.prior import load_denoiser
from diffrestore.operators.deblur import Blur, gaussian_kernel


@pytest.fixture(scope="module")
def model_kw(refs_dir: Path) -> dict[str, object]:
    return dict(model=str(refs_dir / "adm_small.safetensors"), config=str(refs_dir / "adm_small.json"),
                tile=32)


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)


def test_shred_tiles_with_overlap_loss(model_kw: dict[str, object]) -> None:
    """SHRED over 2x2 tiles (MSR as a loss): the result has the image size, the loss falls, no NaN."""
    x = _smooth(48, 48)
    y = torch.nn.functional.avg_pool2d(x, 2)
    events = []
    res = restore(y, "sr", scale=2, method="shred", iters=2, stride=500, seed=1, progress=events.append,
                  **model_kw)
    assert res.image.shape == (1, 3, 48, 48) and torch.isfinite(res.x).all()
    assert res.info["phases"][0]["tiles"] == 4 and res.info["iters"] == 2
    assert any(e.phase.startswith("shred tiles") and "loss" in e.info for e in events)
    with pytest.raises(UserError, match="stride 300 must divide"):
        restore(y, "sr", scale=2, method="shred", stride=300, **model_kw)


def test_shred_blind_writes_the_kernel(model_kw: dict[str, object], tmp_path: Path) -> None:
    """``--task deblur --kernel unknown``: one kernel per image (non-negative, sum 1), PNG and .npy."""
    x = _smooth(32, 32, seed=2)
    y = Blur(gaussian_kernel(5, 1.0)).bind((3, 32, 32)).A(x)
    write_image(tmp_path / "blurred.png", y.clamp(0, 1))
    out = tmp_path / "sharp.png"
    rc = main(["restore", str(tmp_path / "blurred.png"), str(out), "--task", "deblur", "--kernel", "unknown",
               "--method", "shred", "--iters", "2", "--stride", "500", "--kernel-size", "5",
               "--model", model_kw["model"], "--config", model_kw["config"], "--quiet"])  # type: ignore[list-item]
    assert rc == 0 and out.is_file()
    k = np.load(tmp_path / "sharp.kernel.npy")
    assert k.shape == (5, 5) and k.min() >= 0 and abs(k.sum() - 1) < 1e-5
    assert (tmp_path / "sharp.kernel.png").is_file()
    with pytest.raises(UserError, match="cannot estimate it"):
        restore(y, "deblur", kernel="unknown", method="ddnm", **model_kw)


def test_adir_adapted_restore_leaves_the_cached_prior_unchanged(model_kw: dict[str, object],
                                                                 tmp_path: Path) -> None:
    """Self-adaptation trains LoRA on a copy: the cached denoiser's weights are bit-identical afterwards,
    and the saved adapter reproduces the adapted run."""
    den, _ = load_denoiser(model_kw["model"], model_kw["config"])  # the object restore's cache hands out
    before = {k: v.clone() for k, v in den.net.state_dict().items()}
    y = torch.nn.functional.avg_pool2d(_smooth(32, 32, seed=3), 2)
    ad = tmp_path / "a.safetensors"
    a = restore(y, "sr", scale=2, method="adir", steps=3, adapt="self", adapt_steps=2, adapt_batch=2, rank=2,
                save_adapter=str(ad), seed=4, **model_kw)
    after = den.net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in k for k in after)
    b = restore(y, "sr", scale=2, method="adir", steps=3, adapter=str(ad), seed=4, **model_kw)
    torch.testing.assert_close(a.x, b.x, atol=1e-5, rtol=0)
    plain = restore(y, "sr", scale=2, method="adir", steps=3, seed=4, **model_kw)
    assert (plain.x - a.x).abs().max() > 1e-6  # the adapter changed the prior used
    with pytest.raises(UserError, match="needs --neighbours"):
        restore(y, "sr", scale=2, method="adir", adapt="knn", **model_kw)


def test_resshift_blends_tiles_and_keeps_the_official_chopping(refs_dir: Path, tmp_path: Path) -> None:
    """ResShift through the tiling layer (blend rule, LQ crops per tile) and the official plain averaging."""
    import json

    d = refs_dir / "nets" / "resshift_swinunet_small"
    cfg = json.loads((d / "config.json").read_text())
    cfg["diffusion"] = {"type": "resshift", "steps": 4, "kappa": 2.0, "min_noise_level": 0.2,
                        "etas_end": 0.99, "power": 0.3, "latent": False, "sf": 4}
    (tmp_path / "rs.json").write_text(json.dumps(cfg))
    kw = dict(method="resshift", model=str(d / "weights.safetensors"), config=str(tmp_path / "rs.json"),
              tile=32)
    y = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    a = restore(y, "sr", scale=4, batch=2, **kw)
    b = restore(y, "sr", scale=4, batch=6, **kw)
    assert a.image.shape == (1, 3, 48, 80) and a.info["phases"][0]["tiles"] == 6
    torch.testing.assert_close(a.x, b.x, atol=1e-5, rtol=0)  # batching does not change a tile's draws
    off = restore(y, "sr", scale=4, chop="official", **kw)
    assert off.image.shape == (1, 3, 48, 80) and off.info["chop"] == "official"
    with pytest.raises(UserError, match="super-resolution only"):
        restore(torch.rand(1, 3, 16, 16), "denoise", **kw)
    with pytest.raises(UserError, match="is x4"):
        restore(y, "sr", scale=2, **kw)
