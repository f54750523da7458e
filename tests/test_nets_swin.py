"""ResShift Swin-UNet: official vector at 16x16 / 32x32 / 16x32, the quirky mask, buffers, dtype, autograd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffrestore.io.checkpoints import load_into
from diffrestore.nets import build_network
from diffrestore.nets.swin import (
    SwinTransformerBlock,
    UNetModelSwin,
    official_shift_mask,
    relative_position_index,
)
from diffrestore.nets.vectors import run_vector

NAME = "resshift_swinunet_small"
SIZES = ("16x16", "32x32", "16x32")
TAPS = ("out", "h_input_blocks_1", "h_input_blocks_1_swin_block0", "h_input_blocks_1_swin_block1",
        "h_middle_block")


def _cfg(refs_dir: Path) -> dict:
    return json.loads((refs_dir / "nets" / NAME / "config.json").read_text())["config"]


@pytest.fixture(scope="module")
def loaded(refs_dir: Path) -> tuple[UNetModelSwin, dict[str, torch.Tensor]]:
    vdir = refs_dir / "nets" / NAME
    model = build_network("resshift_swinunet", _cfg(refs_dir)).eval()
    load_into(model, vdir / "weights.safetensors")
    return model, load_file(str(vdir / "io.safetensors"))


def test_official_vector(refs_dir: Path) -> None:
    results = run_vector(refs_dir / "nets" / NAME)
    assert {r.name.split("/")[1] for r in results} == {f"{t}.{s}" for t in TAPS for s in SIZES}
    bad = [f"{r.name}: {r.max_abs_diff:.3g} > {r.tol:.3g}" for r in results if not r.ok]
    assert not bad, bad


def test_buffers_equal_official(refs_dir: Path) -> None:
    """attn_mask (shifted blocks only) and relative_position_index are built exactly as stored."""
    weights = load_file(str(refs_dir / "nets" / NAME / "weights.safetensors"))
    sd = build_network("resshift_swinunet", _cfg(refs_dir)).state_dict()
    buffers = [k for k in sd if k.endswith(("attn_mask", "relative_position_index"))]
    assert sum(k.endswith("attn_mask") for k in buffers) == 4  # levels 16 and 8, both sides
    for k in buffers:
        assert sd[k].dtype == weights[k].dtype and torch.equal(sd[k], weights[k]), k


def test_mask_rule_shape() -> None:
    m = official_shift_mask(8, 16, 4, 2)  # 2 x 4 windows, non-square
    assert m.shape == (8, 16, 16)
    assert torch.all(m[:4] == 0)  # only the last window ROW is masked
    a = torch.arange(16) % 4 >= 2
    want = (a[:, None] != a[None, :]).float() * -100
    assert torch.equal(m[4:], want.expand(4, 16, 16))
    idx = relative_position_index(2)
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_construction_rule_window_and_shift() -> None:
    blk = SwinTransformerBlock(32, (4, 4), num_heads=2, window_size=8, shift_size=4)
    assert (blk.window_size, blk.shift_size, blk.attn_mask) == (4, 0, None)
    assert blk.attn.relative_position_bias_table.shape == (49, 2)
    blk = SwinTransformerBlock(32, (16, 16), num_heads=2, window_size=8, shift_size=4)
    assert blk.attn_mask is not None and "attn_mask" in blk.state_dict()


def test_buffer_path_equals_runtime_rule_path() -> None:
    """At construction size the stored mask is used; the run-time rule path must give the same result."""
    torch.manual_seed(0)
    blk = SwinTransformerBlock(32, (8, 8), num_heads=2, window_size=4, shift_size=2).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_()
        x = torch.randn(3, 32, 8, 8)
        via_buffer = blk(x)
        blk.input_resolution = (-1, -1)  # force the run-time computation
        via_rule = blk(x)
    torch.testing.assert_close(via_rule, via_buffer, atol=1e-5, rtol=0)


def test_taps_match_forward(loaded: tuple[UNetModelSwin, dict[str, torch.Tensor]]) -> None:
    model, io = loaded
    x, t, lq = io["in.x.16x32"], io["in.timesteps.16x32"], io["in.lq.16x32"]
    with torch.no_grad():
        taps = model.forward_with_taps(x, t, lq=lq)
        out = model(x, t, lq=lq)
    assert set(taps) == set(TAPS)
    assert torch.equal(taps["out"], out)


def test_bad_inputs_raise(loaded: tuple[UNetModelSwin, dict[str, torch.Tensor]]) -> None:
    model, io = loaded
    x, t = io["in.x.16x16"], io["in.timesteps.16x16"]
    assert model.divisor == 16
    with pytest.raises(ValueError, match="lq"):
        model(x, t)
    with pytest.raises(ValueError, match="divisible"):
        model(x[..., :12, :12], t, lq=io["in.lq.16x16"][..., :12, :12])


def test_input_grad_leaves_weights_untouched(loaded: tuple[UNetModelSwin, dict[str, torch.Tensor]]) -> None:
    model, io = loaded
    model.requires_grad_(False)
    x = io["in.x.16x32"].clone().requires_grad_(True)
    model(x, io["in.timesteps.16x32"], lq=io["in.lq.16x32"]).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_bf16_close_to_fp32(refs_dir: Path) -> None:
    vdir = refs_dir / "nets" / NAME
    model = build_network("resshift_swinunet", _cfg(refs_dir)).eval()
    load_into(model, vdir / "weights.safetensors", dtype=torch.bfloat16)
    io = load_file(str(vdir / "io.safetensors"))
    with torch.no_grad():
        got = model(io["in.x.32x32"].bfloat16(), io["in.timesteps.32x32"], lq=io["in.lq.32x32"].bfloat16())
    assert got.dtype == torch.bfloat16
    want = io["out.out.32x32"]
    assert (got.float() - want).abs().mean().item() < 0.05 * want.abs().mean().item()


def test_meta_build_then_load(refs_dir: Path) -> None:
    vdir = refs_dir / "nets" / NAME
    with torch.device("meta"):
        model = build_network("resshift_swinunet", _cfg(refs_dir))
    load_into(model, vdir / "weights.safetensors")
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    io = load_file(str(vdir / "io.safetensors"))
    with torch.no_grad():
        got = model.eval()(io["in.x.16x16"], io["in.timesteps.16x16"], lq=io["in.lq.16x16"])
    torch.testing.assert_close(got, io["out.out.16x16"], atol=1e-4, rtol=0)
