"""The whole official ResShift inference path (refs ``resshift_sampler_small``: single, reflect_pad, chop),
replayed with the recorded noise draws, plus the pieces a tiling layer builds on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from diffrestore.diffusion.noise import Replay, SeededNoise
from diffrestore.diffusion.resshift_schedule import schedule_from_spec
from diffrestore.errors import UserError
from diffrestore.io.checkpoints import load_into
from diffrestore.methods.resshift_sampler import (
    chop_boxes,
    chop_starts,
    reflect_pad,
    resshift_chopped,
    resshift_condition,
    resshift_decode,
    resshift_denoise,
    resshift_sample,
)
from diffrestore.nets import build_network

ATOL = 1e-4
CASES = ("single", "reflect_pad", "chop")


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """Tiny tensors: one thread is as fast when idle and far faster on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nets(refs_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    out = []
    for name in ("resshift_swinunet_small", "vq_f4_small"):
        d = refs_dir / "nets" / name
        cfg = json.loads((d / "config.json").read_text())
        net = build_network(cfg["family"], cfg["config"]).eval()
        load_into(net, d / "weights.safetensors")
        net.requires_grad_(False)
        out.append(net)
    return out[0], out[1]


def _case(refs_dir: Path, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    d = refs_dir / "resshift_sampler_small" / name
    return json.loads((d / "case.json").read_text()), load_file(str(d / "data.safetensors"))


def _close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float = ATOL) -> None:
    err = float((got.float() - want.float()).abs().max())
    assert got.shape == want.shape and err <= atol, f"{what}: max abs err {err:.3g}"


@pytest.mark.parametrize("name", CASES)
def test_official_vectors(refs_dir: Path, nets: tuple[torch.nn.Module, torch.nn.Module], name: str) -> None:
    case, data = _case(refs_dir, name)
    net, vq = nets
    sched = schedule_from_spec(case["diffusion"])
    args = case["sampler_args"]
    traces: list[dict[str, Any]] = []

    def cb(step: int, total: int, **info: Any) -> None:
        assert total == sched.steps * case["n_patches"]
        traces.append({"step": step, **info})

    noise = Replay.from_safetensors(data)
    out = resshift_chopped(net, data["in.lq"], sched, noise=noise, vq=vq, chop_size=args["chop_size"],
                           chop_stride=args["chop_stride"], scale=args["sf"], batch=1, callback=cb,
                           pad_multiple=args["padding_offset"])
    assert noise.remaining == 0  # 1 + T draws per patch, all consumed
    T = sched.steps
    assert [tr["step"] for tr in traces] == list(range(T * case["n_patches"]))
    for k in range(case["n_patches"]):
        for i in range(T):
            tr = traces[k * T + i]
            assert tr["t"] == int(data[f"p{k}.trace.t.{i}"])
            for ours, ref in (("model_in", "model_in"), ("model_out", "model_out"), ("x0", "x0"),
                              ("mean", "mean"), ("x_next", "xt")):
                _close(tr[ours], data[f"p{k}.trace.{ref}.{i}"], f"{name} p{k} {ref}.{i}")
        _close(traces[k * T]["x_t"], data[f"p{k}.x_T"], f"{name} p{k} x_T")
    _close(out, data["out.x0"], f"{name} out.x0")
    u8 = torch.round((out * 0.5 + 0.5).clamp(0, 1) * 255)[0].permute(1, 2, 0).long()
    assert int((u8 - data["out.uint8"]).abs().max()) <= 1
    if "chop" in name:
        want = [tuple(u["lq_box"][0][::2]) for u in case["spliter_updates"]]
        assert [b[:2] for b in out_boxes(case)] == want


def out_boxes(case: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    h, w = case["lq_hw"]
    return chop_boxes(h, w, case["sampler_args"]["chop_size"], case["sampler_args"]["chop_stride"])


def test_pieces_match_per_patch_intermediates(refs_dir: Path, nets: tuple[torch.nn.Module, torch.nn.Module]
                                              ) -> None:
    """Pad, condition, denoise (the one-chop-batch function) and decode separately, against p0.*."""
    case, data = _case(refs_dir, "reflect_pad")
    net, vq = nets
    sched = schedule_from_spec(case["diffusion"])
    with torch.no_grad():
        padded = reflect_pad(data["p0.lq"], case["sampler_args"]["padding_offset"])
        _close(padded, data["p0.lq_padded"], "lq_padded", atol=0)
        y0, cond = resshift_condition(padded, scale=4, vq=vq)
        _close(y0, data["p0.z_y"], "z_y")
        assert cond is padded
        z = resshift_denoise(net, y0, cond, sched, noise=Replay.from_safetensors(data), streams=[(0, 0)])
        _close(z, data["p0.z_final"], "z_final")
        assert torch.equal(vq.quantize(z)[1], data["p0.vq_indices"])
        img = resshift_decode(z, vq=vq, hw=tuple(data["p0.out"].shape[-2:]))
        _close(img, data["p0.out"], "out")


def test_chop_geometry() -> None:
    assert chop_starts(24, 16, 12) == [0, 8]
    assert chop_starts(36, 16, 12) == [0, 12, 20]
    assert chop_starts(16, 16, 12) == [0] and chop_starts(10, 16, 12) == [0]
    assert chop_boxes(10, 40, 16, 12) == [(0, 0, 10, 16), (0, 12, 10, 16), (0, 24, 10, 16)]
    # reflect padding beyond the official limit (pad >= side) still works, replicate for 1-pixel sides
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert reflect_pad(x, 8).shape == (1, 1, 8, 8)
    assert reflect_pad(torch.ones(1, 1, 1, 3), 4).shape == (1, 1, 4, 4)


def test_batched_tiles_equal_single_tiles(nets: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    """Per-tile streams: a chop's result does not depend on which chops share its batch."""
    net, vq = nets
    sched = schedule_from_spec({"steps": 4, "kappa": 2.0, "min_noise_level": 0.2})
    lq = torch.rand(1, 3, 24, 36) * 2 - 1
    one = resshift_chopped(net, lq, sched, noise=SeededNoise(5), vq=vq, chop_size=16, chop_stride=12, batch=1)
    many = resshift_chopped(net, lq, sched, noise=SeededNoise(5), vq=vq, chop_size=16, chop_stride=12,
                            batch=4)
    assert one.shape == (1, 3, 96, 144)
    assert torch.allclose(one, many, atol=2e-4)
    other = resshift_chopped(net, lq, sched, noise=SeededNoise(6), vq=vq, chop_size=16, chop_stride=12)
    assert float((other - one).abs().max()) > 1e-2  # the seed matters
    assert float(one.abs().max()) <= 1.0


def test_pixel_space_and_errors(nets: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    """Without a VQ the chain runs on the bicubic image itself (cond = y0) and clips x0 (official rule)."""
    net, vq = nets
    sched = schedule_from_spec({"steps": 3, "kappa": 1.0, "min_noise_level": 0.1})
    seen: list[float] = []
    lq = torch.rand(2, 3, 4, 4) * 2 - 1
    out = resshift_sample(net, lq, sched, noise=SeededNoise(0), streams=[0, 1], scale=4,
                          callback=lambda s, n, **i: seen.append(float(i["x0"].abs().max())))
    assert out.shape == (2, 3, 16, 16) and len(seen) == 3 and max(seen) <= 1.0
    with pytest.raises(UserError):
        resshift_sample(net, torch.zeros(3, 8, 8), sched, noise=SeededNoise(0))
    with pytest.raises(UserError):  # x2 SR with an f4 VQ: latent and LQ sizes differ
        resshift_sample(net, torch.zeros(1, 3, 16, 16), sched, noise=SeededNoise(0), vq=vq, scale=2)
