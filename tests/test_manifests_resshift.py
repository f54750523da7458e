"""ResShift released checkpoints: our networks, built on the meta device from the manifests' configs, have
exactly the released state_dict (keys in order, shapes, dtypes, parameter and buffer counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from needs import require

from diffrestore.nets import build_network

MANIFESTS = [
    "resshift_realsrx4_s4_v3",
    "resshift_realsrx4_s15_v1",
    "resshift_realsrx4_s15_v2",
    "resshift_bicsrx4_s4",
    "autoencoder_vq_f4",
]


@pytest.mark.parametrize("name", MANIFESTS)
def test_state_dict_matches_manifest(refs_dir: Path, name: str) -> None:
    path = refs_dir / "manifests" / f"{name}.keys.json"
    require(path, "ResShift manifest")
    man = json.loads(path.read_text())
    with torch.device("meta"):
        model = build_network(man["family"], man["config"])
    sd = model.state_dict()
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()]
    want = [list(e) for e in man["keys"]]
    missing = sorted({k for k, *_ in want} - set(sd))
    extra = sorted(set(sd) - {k for k, *_ in want})
    assert not missing and not extra, (missing[:5], extra[:5])
    assert got == want  # order, shapes and dtypes
    assert sum(p.numel() for p in model.parameters()) == man["num_params"]
    buffers = [k for k, _ in model.named_buffers()]
    assert len(buffers) == man["num_buffers_in_state_dict"]
    assert sorted(buffers) == sorted(man.get("buffers", []))
    assert all(t.is_meta for t in sd.values())  # nothing was allocated
