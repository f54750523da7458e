"""Training the default prior: finite loss, checkpoints, exact resume, fp16 export that loads back.

Uses the ``tiny`` architecture on 16x16 crops of a few generated photos so it runs in seconds on CPU.
Exact resume is the property that lets the real run be stopped and continued (or moved to a GPU) at any
time without changing its result, so it is checked bit-for-bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from diffrestore.cli.main import main
from diffrestore.diffusion.schedules import linear_betas
from diffrestore.errors import UserError
from diffrestore.io.checkpoints import load_into
from diffrestore.nets import build_network
from diffrestore.train.data import CropSampler, find_images, load_images
from diffrestore.train.export import export_prior
from diffrestore.train.prior import TrainConfig, read_checkpoint, train_prior


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few smooth random colour images (PNG and JPEG, one in a subfolder, one smaller than a crop)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    sizes = [(40, 56), (48, 33), (12, 20), (64, 64)]
    for i, (h, w) in enumerate(sizes):
        base = rng.random((h // 4 + 2, w // 4 + 2, 3))
        img = Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        sub = root / "sub" if i == 3 else root
        sub.mkdir(exist_ok=True)
        img.save(sub / (f"img{i}.jpg" if i % 2 else f"img{i}.png"))
    return root


def _cfg(data: Path, out: Path, steps: int, **kw: object) -> TrainConfig:
    opts: dict[str, object] = dict(
        size=16,
        batch=3,
        arch="tiny",
        warmup=2,
        t_low_frac=0.5,
        ckpt_minutes=0,
        log_every=1,
        progress=False,
        seed=3,
    )
    opts.update(kw)
    return TrainConfig(data=[str(data)], out=str(out), steps=steps, **opts)  # type: ignore[arg-type]


def test_crop_sampler(photo_dir: Path) -> None:
    files = find_images([photo_dir])
    assert len(files) == 4
    sampler = CropSampler(load_images(files, min_side=16), 16, vflip=True, rot90=True)
    g = torch.Generator().manual_seed(0)
    x = sampler.sample(8, g)
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    again = CropSampler(load_images(files, min_side=16), 16, vflip=True, rot90=True)
    assert torch.equal(again.sample(8, torch.Generator().manual_seed(0)), x)  # seeded -> reproducible


def test_no_data_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        find_images([tmp_path / "empty"])
    rc = main(
        ["train", "prior", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r"), "--steps", "1"]
    )
    assert rc == 2


def test_train_resume_export(photo_dir: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact comparisons need the same thread count in both runs
    try:
        full: dict[int, float] = {}
        train_prior(_cfg(photo_dir, tmp_path / "a", 3), on_step=lambda s, v: full.__setitem__(s, v))
        assert sorted(full) == [1, 2, 3] and all(np.isfinite(v) for v in full.values())

        # Interrupted run through the CLI (2 steps), then resumed to 3 steps.
        run_b = tmp_path / "b"
        args = [
            "train",
            "prior",
            "--data",
            str(photo_dir),
            "--out",
            str(run_b),
            "--size",
            "16",
            "--steps",
            "2",
            "--batch",
            "3",
            "--arch",
            "tiny",
            "--warmup",
            "2",
            "--t-low-frac",
            "0.5",
            "--ckpt-minutes",
            "0",
            "--log-every",
            "1",
            "--no-progress",
            "--seed",
            "3",
        ]
        assert main(args) == 0
        for name in ("ckpt.safetensors", "state.pt", "train.json", "log.csv"):
            assert (run_b / name).is_file(), name
        with pytest.raises(UserError):  # refusing to overwrite a run without --resume
            train_prior(_cfg(photo_dir, run_b, 3))
        resumed: dict[int, float] = {}
        meta = train_prior(
            _cfg(photo_dir, run_b, 3, resume=True), on_step=lambda s, v: resumed.__setitem__(s, v)
        )
        assert sorted(resumed) == [3]
        assert resumed[3] == full[3]  # exact resume: same batch, same noise, same optimizer state
        assert meta["step"] == 3 and meta["images_seen"] == 9 and len(meta["segments"]) == 2
        assert all(s["hardware"] for s in meta["segments"])
        _, ema_a, _ = read_checkpoint(tmp_path / "a")
        _, ema_b, _ = read_checkpoint(run_b)
        assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
        assert len((run_b / "log.csv").read_text().strip().splitlines()) == 4  # header + 3 steps

        # Export: fp16 safetensors + prior.json that rebuild the network through the registry path.
        w, j = export_prior(run_b, tmp_path / "export")
        info = json.loads(j.read_text())
        assert info["family"] == "adm_unet"
        d = info["diffusion"]
        assert (d["schedule"], d["steps"], d["learn_sigma"], d["predict"]) == ("linear", 1000, False, "eps")
        assert np.allclose(np.linspace(d["beta_start"], d["beta_end"], 1000), linear_betas(1000))
        assert info["patch_size"] == 16 and info["training"]["steps"] == 3
        with safe_open(str(w), framework="pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        net = build_network(info["family"], info["config"])
        load_into(net, w)
        ref = build_network(info["family"], info["config"])
        ref.load_state_dict(ema_b)
        x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
        with torch.no_grad():
            assert torch.allclose(net(x, t), ref(x, t), atol=5e-3)

        # A fresh run can start from the exported weights (architecture taken from prior.json).
        meta_c = train_prior(_cfg(photo_dir, tmp_path / "c", 4, arch="small", init_from=str(w)))
        assert meta_c["step"] == 4 and meta_c["model_config"]["model_channels"] == 32
        assert meta_c["segments"][-1]["init_from"] == str(w) and len(meta_c["segments"]) == 3
        # ... or from a run folder (its EMA weights and train.json architecture).
        meta_d = train_prior(_cfg(photo_dir, tmp_path / "d", 4, arch="small", init_from=str(run_b)))
        assert meta_d["step"] == 4 and meta_d["model_config"]["model_channels"] == 32
    finally:
        torch.set_num_threads(threads)
