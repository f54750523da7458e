"""ResShift training: a few steps, exact resume, overfitting, CLI, export -> registry loader -> sampler,
latent mode with the small refs VQ, start from exported weights.

Runs the ``tiny`` Swin-UNet on 16x16 HR crops (4x4 LR) of generated photos so the file stays well under 30 s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffrestore.cli.main import main
from diffrestore.diffusion.noise import SeededNoise
from diffrestore.diffusion.resshift_schedule import schedule_from_spec
from diffrestore.errors import UserError
from diffrestore.io.registry import load_model
from diffrestore.methods.resshift_sampler import resshift_sample
from diffrestore.train.common import read_checkpoint
from diffrestore.train.export import export_run
from diffrestore.train.resshift import ResShiftTrainConfig, arch_config, train_resshift


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 56), (48, 33), (32, 32)]):
        base = rng.random((h // 4 + 2, w // 4 + 2, 3))
        img = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        img.save(root / f"img{i}.png")
    return root


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """Bit-exact comparisons need the same thread count in both runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(threads)


def _cfg(data: Path, out: Path, steps: int, **kw: object) -> ResShiftTrainConfig:
    opts: dict[str, object] = dict(size=16, batch=3, arch="tiny", warmup=2, ckpt_minutes=0, log_every=1,
                                   progress=False, seed=3, precision="fp32")
    opts.update(kw)
    return ResShiftTrainConfig(data=[str(data)], out=str(out), steps=steps, **opts)  # type: ignore[arg-type]


def test_exact_resume_and_export(photo_dir: Path, tmp_path: Path) -> None:
    full: dict[int, float] = {}
    train_resshift(_cfg(photo_dir, tmp_path / "a", 4), on_step=lambda s, v: full.__setitem__(s, v))
    assert sorted(full) == [1, 2, 3, 4] and all(np.isfinite(v) for v in full.values())

    run_b = tmp_path / "b"
    args = ["train", "resshift", "--data", str(photo_dir), "--out", str(run_b), "--size", "16",
            "--steps", "2", "--batch", "3", "--arch", "tiny", "--warmup", "2", "--ckpt-minutes", "0",
            "--log-every", "1",
            "--no-progress", "--seed", "3", "--precision", "fp32"]
    assert main(args) == 0
    for name in ("ckpt.safetensors", "state.pt", "train.json", "log.csv"):
        assert (run_b / name).is_file(), name
    with pytest.raises(UserError):  # an existing run is not overwritten without --resume
        train_resshift(_cfg(photo_dir, run_b, 4))
    resumed: dict[int, float] = {}
    meta = train_resshift(_cfg(photo_dir, run_b, 4, resume=True),
                          on_step=lambda s, v: resumed.__setitem__(s, v))
    assert sorted(resumed) == [3, 4] and resumed == {k: full[k] for k in (3, 4)}
    assert meta["step"] == 4 and len(meta["segments"]) == 2 and meta["diffusion"]["kappa"] == 2.0
    model_a, ema_a, _ = read_checkpoint(tmp_path / "a")
    model_b, ema_b, _ = read_checkpoint(run_b)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)

    # Export -> fp16 + resshift.json that the registry's user-model path loads; the sampler runs it.
    w, j = export_run(run_b, tmp_path / "export")
    assert w.name == "resshift.safetensors"
    info = json.loads(j.read_text())
    assert info["family"] == "resshift_swinunet" and info["scale"] == 4 and info["requires"] == []
    net, spec = load_model(w)
    assert spec.diffusion is not None and spec.diffusion["steps"] == 4
    lq = torch.rand(1, 3, 5, 6) * 2 - 1
    out = resshift_sample(net, lq, schedule_from_spec(spec.diffusion), noise=SeededNoise(0))
    assert out.shape == (1, 3, 20, 24) and bool(torch.isfinite(out).all())

    # A new run can start from the exported weights (architecture and step count from resshift.json).
    meta_c = train_resshift(_cfg(photo_dir, tmp_path / "c", 5, arch="small", init_from=str(w)))
    assert meta_c["step"] == 5 and meta_c["model_config"] == info["config"]
    assert meta_c["segments"][-1]["init_from"] == str(w)


def test_overfit_loss_decreases(photo_dir: Path, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(photo_dir / "img2.png", one / "img.png")
    losses: list[float] = []
    train_resshift(_cfg(one, tmp_path / "o", 40, batch=4, lr=2e-3, warmup=1, p_native=1.0),
                   on_step=lambda s, v: losses.append(v))
    first, last = float(np.mean(losses[:8])), float(np.mean(losses[-8:]))
    assert last < 0.6 * first, (first, last)


def test_latent_mode_with_small_vq(refs_dir: Path, photo_dir: Path, tmp_path: Path) -> None:
    """--latent: x0/y0 are VQ latents (f4: the LR's resolution), the LR is the network's lq."""
    src = refs_dir / "nets" / "vq_f4_small"
    vq_path = tmp_path / "vq.safetensors"
    shutil.copy(src / "weights.safetensors", vq_path)
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "vq.json").write_text(json.dumps({"family": cfg["family"], "config": cfg["config"]}))
    losses: list[float] = []
    meta = train_resshift(_cfg(photo_dir, tmp_path / "lat", 2, size=32, latent=True, vq=str(vq_path)),
                          on_step=lambda s, v: losses.append(v))
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert meta["model_config"]["image_size"] == 8 and meta["diffusion"]["latent"] is True
    w, j = export_run(tmp_path / "lat", tmp_path / "lat_export")
    assert json.loads(j.read_text())["requires"] == ["vq-f4"]


def test_user_errors(photo_dir: Path, tmp_path: Path) -> None:
    rc = main(["train", "resshift", "--data", str(photo_dir), "--out", str(tmp_path / "r"), "--latent"])
    assert rc == 2  # --latent without --vq
    with pytest.raises(UserError):
        train_resshift(_cfg(photo_dir, tmp_path / "r2", 1, size=18))  # not a multiple of the scale
    with pytest.raises(UserError):
        train_resshift(_cfg(photo_dir, tmp_path / "r3", 1, size=20))  # not a multiple of the windows
    with pytest.raises(UserError):
        arch_config("no-such-preset", 16)
