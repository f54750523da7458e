"""DDPM (SDEdit/DDRM/DDNM CelebA-HQ) network against the official vector, plus config forms and checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffrestore.nets.ddpm import build_ddpm
from diffrestore.nets.vectors import run_vector


def test_official_vector(refs_dir: Path) -> None:
    results = run_vector(refs_dir / "nets" / "ddpm_small")
    assert {r.name.split("/")[1] for r in results} == {"out", "grad_x"}
    bad = [f"{r.name}: {r.max_abs_diff:.3g} > {r.tol:.3g}" for r in results if not r.ok]
    assert not bad, bad


def _load(refs_dir: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    vdir = refs_dir / "nets" / "ddpm_small"
    model = build_ddpm(json.loads((vdir / "config.json").read_text())["config"]).eval()
    model.load_state_dict(load_file(str(vdir / "weights.safetensors")), strict=True)
    return model, load_file(str(vdir / "io.safetensors"))


def test_manifest_keys_on_meta(refs_dir: Path) -> None:
    m = json.loads((refs_dir / "manifests" / "celeba_hq.keys.json").read_text())
    want = [[k, s] for k, s, _ in m["keys"]]
    flat = {**m["config"]["model"], "image_size": m["config"]["data"]["image_size"]}
    for cfg in (m["config"], m, flat):
        with torch.device("meta"):
            net = build_ddpm(cfg)
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == want
        assert sum(p.numel() for p in net.parameters()) == m["num_params"]


def test_wrong_size_is_a_clear_error(refs_dir: Path) -> None:
    model, io = _load(refs_dir)
    with pytest.raises(ValueError, match="32x32"):
        model(io["in.x"][:, :, :16, :16], io["in.t"])


def test_bf16_and_channels_last(refs_dir: Path) -> None:
    model, io = _load(refs_dir)
    x, t, want = io["in.x"], io["in.t"], io["out.out"]
    with torch.no_grad():
        got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        got16 = model.to(torch.bfloat16)(x.to(torch.bfloat16), t)
    assert (got16.float() - want).abs().max().item() < 0.1 * want.abs().max().item()


def test_input_grad_leaves_weights_untouched(refs_dir: Path) -> None:
    model, io = _load(refs_dir)
    model.requires_grad_(False)
    x = io["in.x"].clone().requires_grad_(True)
    (model(x, io["in.t"]) * io["in.w"]).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, io["out.grad_x"], atol=1e-4, rtol=0)
    assert all(p.grad is None for p in model.parameters())
