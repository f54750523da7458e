"""Checkpoint loading: safe formats only, official wrapping rules, strict and readable key errors."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from diffrestore.errors import UserError
from diffrestore.io.checkpoints import load_into, load_state_dict, save_state_dict

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "diffrestore_pickle_executed_marker"


class Evil:
    """Unpickling this would create MARKER: proves the loader never runs pickled code."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


class Small(nn.Module):
    """ADM-like naming (Sequential indices, GroupNorm) plus an integer buffer like Swin's position index."""

    def __init__(self) -> None:
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 8))
        self.out = nn.Sequential(nn.GroupNorm(2, 8), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.register_buffer("relative_position_index", torch.arange(6).reshape(2, 3))


def _random_sd(model: nn.Module, seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    return OrderedDict(
        (k, torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone() + 1)
        for k, v in sd.items()
    )


def _assert_loaded(model: nn.Module, sd: dict) -> None:
    got = model.state_dict()
    assert list(got) == list(sd)
    for k in sd:
        assert got[k].dtype == sd[k].dtype
        assert torch.equal(got[k], sd[k]), k


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".safetensors"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    sd = _random_sd(Small())
    path = save_state_dict(sd, tmp_path / f"w{suffix}")
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [f"w{suffix}"]  # no temp left
    loaded = load_state_dict(path)
    assert list(loaded) == list(sd)
    model = load_into(Small(), path)
    _assert_loaded(model, sd)


def test_round_trip_adm_small_if_available(tmp_path: Path) -> None:
    from diffrestore.nets import build_network

    cfg = {"image_size": 32, "in_channels": 3, "model_channels": 32, "out_channels": 6, "num_res_blocks": 1,
           "attention_resolutions": [2, 4], "channel_mult": [1, 2, 2], "num_head_channels": 16,
           "use_scale_shift_norm": True, "resblock_updown": True}
    net = build_network("adm_unet", cfg)
    sd = _random_sd(net)
    for suffix in (".pt", ".safetensors"):
        save_state_dict(sd, tmp_path / f"adm{suffix}")
        _assert_loaded(load_into(build_network("adm_unet", cfg), tmp_path / f"adm{suffix}"), sd)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        lambda sd: {"model": sd, "step": 10},
        lambda sd: {"ema": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    ],
    ids=["state_dict", "model", "ema", "module", "orig_mod", "state_dict+module+orig_mod"],
)
def test_unwrap(tmp_path: Path, wrap) -> None:
    sd = _random_sd(Small())
    torch.save(wrap(sd), tmp_path / "w.pt")
    loaded = load_state_dict(tmp_path / "w.pt")
    assert list(loaded) == list(sd)
    _assert_loaded(load_into(Small(), tmp_path / "w.pt"), sd)
    _assert_loaded(load_into(Small(), wrap(sd)), sd)  # an in-memory dict follows the same rules


def test_ema_preferred_over_model(tmp_path: Path) -> None:
    a, b = _random_sd(Small(), 1), _random_sd(Small(), 2)
    torch.save({"model": a, "ema": b}, tmp_path / "w.pt")
    _assert_loaded(load_into(Small(), tmp_path / "w.pt"), b)


def test_prefix_decided_by_first_key() -> None:
    sd = _random_sd(Small())
    keys = list(sd)
    mixed = {("module." + k if i else k): v for i, (k, v) in enumerate(sd.items())}  # first key unprefixed
    with pytest.raises(UserError) as e:
        load_into(Small(), mixed)
    assert "unexpected" in str(e.value) and f"module.{keys[1]}" in str(e.value)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_key_message() -> None:
    sd = _random_sd(Small())
    del sd["out.2.bias"]
    with pytest.raises(UserError) as e:
        load_into(Small(), sd)
    msg = _one_line(e)
    assert "1 missing key(s): out.2.bias" in msg and "unexpected" not in msg


def test_many_missing_keys_are_summarised() -> None:
    sd = _random_sd(Small())
    keep = {"out.2.bias": sd["out.2.bias"]}
    with pytest.raises(UserError) as e:
        load_into(Small(), keep)
    msg = _one_line(e)
    assert "8 missing key(s)" in msg and "(+5 more)" in msg


def test_unexpected_key_message() -> None:
    sd = _random_sd(Small())
    sd["label_emb.weight"] = torch.zeros(10, 8)
    with pytest.raises(UserError) as e:
        load_into(Small(), sd)
    assert "1 unexpected key(s): label_emb.weight" in _one_line(e)


def test_wrong_shape_message(tmp_path: Path) -> None:
    sd = _random_sd(Small())
    sd["time_embed.0.weight"] = torch.zeros(8, 5)
    save_state_dict(sd, tmp_path / "w.safetensors")
    with pytest.raises(UserError) as e:
        load_into(Small(), tmp_path / "w.safetensors")
    msg = _one_line(e)
    assert "mis-shaped" in msg and "time_embed.0.weight file [8,5] vs network [8,4]" in msg
    assert str(tmp_path / "w.safetensors") in msg


def test_dtype_cast_keeps_integer_buffers() -> None:
    sd = _random_sd(Small())
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    m = load_into(Small(), half)
    assert m.time_embed[0].weight.dtype == torch.float32
    assert m.relative_position_index.dtype == torch.int64
    m = load_into(Small(), sd, dtype=torch.bfloat16)
    assert m.time_embed[0].weight.dtype == torch.bfloat16
    assert m.relative_position_index.dtype == torch.int64
    assert torch.equal(m.relative_position_index, sd["relative_position_index"])


def test_meta_model_is_filled_with_assign() -> None:
    sd = _random_sd(Small())
    with torch.device("meta"):
        m = Small()
    load_into(m, sd)
    assert not any(p.is_meta for p in m.parameters()) and not any(b.is_meta for b in m.buffers())
    _assert_loaded(m, sd)
    assert all(p.requires_grad for p in m.parameters())
    assert isinstance(m.time_embed[0].weight, nn.Parameter)


@pytest.mark.parametrize("payload", ["object", "function"])
def test_pickled_payload_is_refused_and_never_executed(tmp_path: Path, payload: str) -> None:
    MARKER.unlink(missing_ok=True)
    sd = dict(_random_sd(Small()))
    sd["extra"] = Evil() if payload == "object" else os.system  # type: ignore[assignment]
    torch.save(sd, tmp_path / "evil.pt")
    with pytest.raises(UserError) as e:
        load_state_dict(tmp_path / "evil.pt")
    msg = _one_line(e)
    assert "contains pickled Python objects" in msg and "refusing to unpickle" in msg
    with pytest.raises(UserError):
        load_into(Small(), tmp_path / "evil.pt")
    assert not MARKER.exists()


def test_missing_file() -> None:
    with pytest.raises(UserError, match="checkpoint not found"):
        load_state_dict("/nonexistent/dir/w.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_and_garbage_files(tmp_path: Path, suffix: str) -> None:
    save_state_dict(_random_sd(Small()), tmp_path / f"w{suffix}")
    data = (tmp_path / f"w{suffix}").read_bytes()
    (tmp_path / f"t{suffix}").write_bytes(data[: len(data) // 2])
    (tmp_path / f"g{suffix}").write_bytes(b"not a checkpoint at all" * 4)
    (tmp_path / f"e{suffix}").write_bytes(b"")
    for name in ("t", "g", "e"):
        with pytest.raises(UserError) as e:
            load_state_dict(tmp_path / f"{name}{suffix}")
        assert "corrupt or truncated" in _one_line(e)


def test_unsupported_extension_and_non_state_dict(tmp_path: Path) -> None:
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="unsupported checkpoint extension"):
        load_state_dict(tmp_path / "w.onnx")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(UserError, match="no state_dict of tensors"):
        load_state_dict(tmp_path / "meta.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(UserError, match="not a state_dict"):
        load_state_dict(tmp_path / "list.pt")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = _random_sd(Small())
    target = tmp_path / "w.pt"
    save_state_dict(sd, target)
    before = target.read_bytes()

    def boom(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_state_dict(_random_sd(Small(), 5), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


def test_save_handles_views_and_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(12.0)
    sd = {"a": base[:4], "b": base[:4], "c": base.reshape(3, 4)[:, 1]}
    for suffix in (".pt", ".safetensors"):
        save_state_dict(sd, tmp_path / f"v{suffix}")
        got = load_state_dict(tmp_path / f"v{suffix}")
        for k in sd:
            assert torch.equal(got[k], sd[k])
    assert (tmp_path / "v.pt").stat().st_size < 4000


def test_marker_trap_works(tmp_path: Path) -> None:
    """Sanity check of the test above: a real unpickler DOES run Evil's payload."""
    import pickle

    MARKER.unlink(missing_ok=True)
    pickle.loads(pickle.dumps(Evil()))
    assert MARKER.exists()
    MARKER.unlink()
