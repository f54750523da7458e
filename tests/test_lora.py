"""LoRA adapters: exact no-op at injection, frozen base, weight readers see the adapted weight, merge,
state round trips, and adapter files that refuse a different base model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny import TINY_ADM as TINY
from torch import nn

from diffrestore.errors import UserError
from diffrestore.nets.adm import build_unet
from diffrestore.nets.lora import (
    LoRALayer,
    base_fingerprint,
    inject_lora,
    load_lora,
    load_lora_file,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    read_lora_file,
    save_lora,
    unmerge_lora,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = build_unet(TINY)
    with torch.no_grad():  # ADM zero-initialises output convs; make every layer matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _randomise(net: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(net):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
T = torch.tensor([10.0, 500.0])


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Linear(6, 5), (4, 6)),
        (nn.Conv1d(6, 9, 1), (2, 6, 7)),
        (nn.Conv2d(4, 6, 1), (2, 4, 5, 5)),
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 9, 9)),
        (nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 5, 5)),
    ],
)
def test_layer_equals_merged_weight(layer: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    ref = copy.deepcopy(layer)
    lo = LoRALayer(layer, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lo(x), ref(x))  # B = 0: exact no-op
    with torch.no_grad():
        lo.lora.B.normal_()
    ref.weight.data = lo.weight.detach().clone()
    assert torch.allclose(lo(x), ref(x), atol=1e-5)
    out = lo(x)
    lo.merge()
    assert torch.allclose(lo(x), out, atol=1e-5)
    lo.unmerge()
    assert torch.allclose(lo(x), out, atol=1e-5)


def test_inject_freeze_and_attention() -> None:
    net = _net()
    ref = net(X, T)
    base = {k: v.clone() for k, v in net.state_dict().items()}
    names = inject_lora(net, rank=2, alpha=2, targets=["*"], generator=torch.Generator().manual_seed(0))
    assert any(n.endswith("qkv") for n in names) and any(n.endswith("skip_connection") for n in names)
    assert torch.equal(net(X, T), ref)  # injection changes nothing
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora.A", ".lora.B")) for n in trainable)
    # ADM attention reads conv.weight directly: an adapter on qkv alone must still change the output
    only_qkv = _net()
    inject_lora(only_qkv, 2, targets=["*.qkv"])
    assert set(lora_layers(only_qkv)) == {n for n in names if n.endswith("qkv")}
    _randomise(only_qkv)
    assert not torch.allclose(only_qkv(X, T), ref)
    # gradients reach the factors only
    _randomise(net)
    net(X, T).pow(2).mean().backward()
    assert all(p.grad is not None for p in lora_parameters(net))
    assert all(p.grad is None for n, p in net.named_parameters() if not n.endswith((".A", ".B")))
    # the base weights are untouched
    sd = {k.replace(".base.", "."): v for k, v in net.state_dict().items() if ".lora." not in k}
    assert all(torch.equal(sd[k], base[k]) for k in base)
    with pytest.raises(UserError):
        inject_lora(_net(), 2, targets=["no_such_layer"])


def test_merge_unmerge_and_state_roundtrip() -> None:
    net = _net()
    inject_lora(net, rank=3, alpha=6)
    _randomise(net)
    out = net(X, T)
    fp = base_fingerprint(net)
    merge_lora(net)
    assert torch.allclose(net(X, T), out, atol=1e-5)
    assert base_fingerprint(net) == fp  # merged layers are hashed un-merged
    unmerge_lora(net)
    assert torch.allclose(net(X, T), out, atol=1e-5)
    other = _net()
    inject_lora(other, rank=3, alpha=6)
    load_lora(other, lora_state_dict(net))
    assert torch.allclose(other(X, T), out, atol=1e-6)
    bad = lora_state_dict(net)
    bad.pop(next(iter(bad)))
    with pytest.raises(UserError):
        load_lora(other, bad)


def test_adapter_file_roundtrip_and_base_check(tmp_path: Path) -> None:
    net = _net()
    inject_lora(net, rank=2, alpha=4, targets=["*in_layers.2", "*qkv"])
    _randomise(net)
    out = net(X, T)
    path = save_lora(net, tmp_path / "a.safetensors", base_name="tiny", targets=["*in_layers.2", "*qkv"])
    state, info = read_lora_file(path)
    assert info["rank"] == 2 and info["alpha"] == 4.0 and info["base_model"] == "tiny"
    assert info["targets"] == ["*in_layers.2", "*qkv"] and set(state) == set(lora_state_dict(net))
    fresh = _net()  # not injected: load_lora_file injects the recorded layers itself
    load_lora_file(fresh, path, base_name="tiny")
    assert torch.allclose(fresh(X, T), out, atol=1e-6)
    with pytest.raises(UserError, match="trained on model"):
        load_lora_file(_net(), path, base_name="other")
    with pytest.raises(UserError, match="does not match"):
        load_lora_file(_net(seed=7), path)  # same architecture, other weights
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError):
        read_lora_file(tmp_path / "junk.safetensors")
