"""Networks whose ``state_dict()`` keys equal the official checkpoints' keys.

A network is described by ``{"family": <name>, "config": <official constructor kwargs>}`` — the same
shape as ``shared/refs/nets/*/config.json`` and the registry's model configs. ``build_network`` is the only
place that maps a family name to a class, so the registry, the CLI and the tests never import classes
directly.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from diffrestore.errors import UserError

# family -> (module, builder function). Each builder takes the official config dict.
FAMILIES: dict[str, tuple[str, str]] = {
    "adm_unet": ("diffrestore.nets.adm", "build_unet"),
    "adm_classifier": ("diffrestore.nets.adm", "build_classifier"),
    "ddpm_unet": ("diffrestore.nets.ddpm", "build_ddpm"),
    "resshift_swinunet": ("diffrestore.nets.swin", "build_swinunet"),
    "vq_f4": ("diffrestore.nets.vq", "build_vq"),
}


def build_network(family: str, config: dict[str, Any]) -> nn.Module:
    """Build an (uninitialised-weights) network of ``family`` from its official config."""
    if family not in FAMILIES:
        raise UserError(f"unknown network family {family!r}; known: {', '.join(FAMILIES)}")
    module, fn = FAMILIES[family]
    return getattr(importlib.import_module(module), fn)(dict(config))
