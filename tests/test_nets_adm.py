"""ADM UNet / classifier against the official vectors, plus dtype, layout and autograd behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffrestore.nets import build_network
from diffrestore.nets.adm import build_classifier, build_unet
from diffrestore.nets.vectors import run_vector

ADM_VECTORS = ["adm_small", "adm_cond_small", "adm_classifier_small"]


@pytest.mark.parametrize("name", ADM_VECTORS)
def test_official_vector(refs_dir: Path, name: str) -> None:
    results = run_vector(refs_dir / "nets" / name)
    assert results
    bad = [f"{r.name}: {r.max_abs_diff:.3g} > {r.tol:.3g}" for r in results if not r.ok]
    assert not bad, bad


def _load(refs_dir: Path, name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    vdir = refs_dir / "nets" / name
    cfg = json.loads((vdir / "config.json").read_text())
    model = build_network(cfg["family"], cfg["config"]).eval()
    model.load_state_dict(load_file(str(vdir / "weights.safetensors")), strict=True)
    return model, load_file(str(vdir / "io.safetensors"))


def test_input_grad_leaves_weights_untouched(refs_dir: Path) -> None:
    model, io = _load(refs_dir, "adm_small")
    model.requires_grad_(False)
    x = io["in.x"].clone().requires_grad_(True)
    model(x, io["in.t"]).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_bf16_close_to_fp32(refs_dir: Path) -> None:
    model, io = _load(refs_dir, "adm_small")
    want = io["out.out"]
    with torch.no_grad():
        got = model.to(torch.bfloat16)(io["in.x"].to(torch.bfloat16), io["in.t"])
    assert got.dtype == torch.bfloat16
    err = (got.float() - want).abs().max().item()
    assert err < 0.1 * want.abs().max().item(), err
    with torch.no_grad():  # fp32 input into a bf16 model: computed in bf16, returned in fp32
        got32 = model(io["in.x"], io["in.t"])
    assert got32.dtype == torch.float32 and (got32 - want).abs().max().item() < 0.1 * want.abs().max().item()


@pytest.mark.parametrize("name", ["adm_small", "adm_cond_small"])
def test_channels_last_same_output(refs_dir: Path, name: str) -> None:
    model, io = _load(refs_dir, name)
    x = io["in.x"]
    with torch.no_grad():
        ref = model(x, io["in.t"], y=io.get("in.y"))
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last), io["in.t"], y=io.get("in.y"))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_scalar_timestep_broadcasts(refs_dir: Path) -> None:
    model, io = _load(refs_dir, "adm_small")
    x = io["in.x"]
    with torch.no_grad():
        a = model(x, torch.full((x.shape[0],), 10))
        b = model(x, 10)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_class_label_required_iff_conditional(refs_dir: Path) -> None:
    model, io = _load(refs_dir, "adm_cond_small")
    with pytest.raises(ValueError):
        model(io["in.x"], io["in.t"])


@pytest.mark.parametrize(
    "manifest,builder",
    [
        ("256x256_diffusion_uncond", build_unet),
        ("256x256_diffusion", build_unet),
        ("256x256_classifier", build_classifier),
    ],
)
def test_manifest_keys_on_meta(refs_dir: Path, manifest: str, builder) -> None:
    """Full-size models build on the meta device with exactly the released keys, order and shapes."""
    m = json.loads((refs_dir / "manifests" / f"{manifest}.keys.json").read_text())
    resolved = next(v for k, v in m.items() if k.startswith("config_resolved"))
    want = [[k, s] for k, s, _ in m["keys"]]
    for cfg in (resolved, m["config"], m):  # resolved kwargs, create_model flags, whole manifest
        with torch.device("meta"):
            net = builder(cfg)
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == want
        assert sum(p.numel() for p in net.parameters()) == m["num_params"]
