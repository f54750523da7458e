"""Regenerate ``src/diffrestore/io/models.json`` from the checkpoint manifests in ``shared/refs``.

The shipped JSON is the source of truth at run time; this script exists so that configs, URLs, parameter
counts and sizes are copied from the manifests (which were read off the official code), never retyped.
Usage: ``python tools/gen_models_json.py [--refs DIR] [--check]`` (``--check``: exit 1 if the file differs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "diffrestore" / "io" / "models.json"
DEFAULT_REFS = ROOT.parent / "shared" / "refs"

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "uint8": 1, "bool": 1}
ZERO_SHOT_TASKS = ["sr", "inpaint", "colorize", "denoise", "deblur", "cs"]

ADM_DIFFUSION = {
    "type": "ddpm",
    "schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "steps": 1000,
    "learn_sigma": True,
    "predict": "eps",
}
RESSHIFT_SOURCE = "zsyOAOA/ResShift@3ce1d81e8402fd50083809ae288a3977f6921bdd"

# name -> (manifest stem, config key in the manifest, hand-written metadata)
ENTRIES: list[tuple[str, str | None, str | None, dict[str, Any]]] = [
    ("default", None, None, {
        "description": "embedded prior shipped inside the package (config in prior.json beside it)",
        "file": "prior/prior.safetensors",
        "config_file": "prior/prior.json",
        "embedded": True,
        "role": "denoiser",
        "tasks": ZERO_SHOT_TASKS,
        "methods": ["ddnm", "shred", "adir"],
    }),
    ("adm-256-uncond", "256x256_diffusion_uncond", "config_resolved_UNetModel", {
        "description": "ImageNet 256x256 unconditional ADM (guided-diffusion); general prior of DDNM/MSR/HiR",
        "role": "denoiser",
        "tasks": ZERO_SHOT_TASKS,
        "methods": ["ddnm", "shred", "adir"],
        "diffusion": ADM_DIFFUSION,
        "image_size": 256,
        "class_cond": False,
    }),
    ("adm-256-cond", "256x256_diffusion", "config_resolved_UNetModel", {
        "description": "ImageNet 256x256 class-conditional ADM (guided-diffusion), 1000 classes",
        "role": "denoiser",
        "tasks": ZERO_SHOT_TASKS,
        "methods": ["ddnm", "shred", "adir"],
        "diffusion": ADM_DIFFUSION,
        "image_size": 256,
        "class_cond": True,
        "num_classes": 1000,
    }),
    ("adm-256-classifier", "256x256_classifier", "config_resolved_EncoderUNetModel", {
        "description": "noisy-image ImageNet 256x256 classifier (guided-diffusion) for classifier guidance",
        "role": "classifier",
        "tasks": ["guidance"],
        "methods": ["adir"],
        "diffusion": {"type": "ddpm", "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                      "steps": 1000},
        "image_size": 256,
        "num_classes": 1000,
    }),
    ("ddpm-celebahq", "celeba_hq", "config", {
        "description": "SDEdit CelebA-HQ 256x256 DDPM (faces), as used by SDEdit/DDRM/DDNM",
        "role": "denoiser",
        "tasks": ZERO_SHOT_TASKS,
        "methods": ["ddnm", "shred", "adir"],
        "domain": "faces",
        "diffusion": {"type": "ddpm", "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                      "steps": 1000, "learn_sigma": False, "var_type": "fixedsmall", "predict": "eps"},
        "image_size": 256,
        "class_cond": False,
    }),
]

RESSHIFT = [
    ("resshift-realsr-v3", "resshift_realsrx4_s4_v3", "realsr_v3_s4", "realsr",
     "ResShift v3 real-world x4 SR, 4 steps (the official README's recommended model)"),
    ("resshift-realsr-v1", "resshift_realsrx4_s15_v1", "realsr_v1_v2_s15", "realsr",
     "ResShift v1 real-world x4 SR, 15 steps (inference_resshift.py's default --version)"),
    ("resshift-realsr-v2", "resshift_realsrx4_s15_v2", "realsr_v1_v2_s15", "realsr",
     "ResShift v2 real-world x4 SR, 15 steps"),
    ("resshift-bicsr", "resshift_bicsrx4_s4", "bicsr_s4", "bicubic",
     "ResShift bicubic x4 SR, 4 steps"),
]


def _size(manifest: dict[str, Any]) -> int:
    total = 0
    for _name, shape, dtype in manifest["keys"]:
        n = 1
        for s in shape:
            n *= int(s)
        total += n * BYTES[dtype]
    return total


def _entry(name: str, manifest: dict[str, Any], config_key: str, meta: dict[str, Any]) -> dict[str, Any]:
    urls = [manifest["url"], *manifest.get("url_alternatives", [])]
    out: dict[str, Any] = {
        "name": name,
        "file": manifest["checkpoint"],
        "family": manifest["family"],
        "config": manifest[config_key],
        "size": _size(manifest),
        "num_params": manifest["num_params"],
        "urls": urls,
        "source": manifest["source"],
        "sha256": None,
    }
    out.update(meta)
    return out


def build(refs: Path) -> list[dict[str, Any]]:
    """All registry entries, in display order."""
    man = refs / "manifests"

    def load(stem: str) -> dict[str, Any]:
        return json.loads((man / f"{stem}.keys.json").read_text())

    entries: list[dict[str, Any]] = []
    for name, stem, key, meta in ENTRIES:
        if stem is None:
            entries.append({"name": name, "family": None, "config": None, "size": None, "num_params": None,
                            "urls": [], "source": "diffrestore", "sha256": None, **meta})
        else:
            entries.append(_entry(name, load(stem), key, meta))
    schedules = json.loads((refs / "resshift_schedule.json").read_text())["configs"]
    for name, stem, sched, degradation, description in RESSHIFT:
        s = schedules[sched]
        diffusion = {
            "type": "resshift",
            "schedule": s["schedule_name"],
            "steps": s["steps"],
            "kappa": s["kappa"],
            "min_noise_level": s["min_noise_level"],
            "etas_end": s["etas_end"],
            "power": s["power"],
            "predict": s["predict_type"],
            "normalize_input": s["normalize_input"],
            "latent": s["latent_flag"],
            "scale_factor": s["scale_factor"],
            "sf": s["sf"],
        }
        entries.append(_entry(name, load(stem), "config", {
            "description": description,
            "role": "denoiser",
            "tasks": ["sr"],
            "methods": ["resshift"],
            "scale": s["sf"],
            "degradation": degradation,
            "diffusion": diffusion,
            "image_size": load(stem)["config"]["lq_size"],
            "requires": ["vq-f4"],
            "config_file": load(stem)["config_file"],
        }))
    vq = load("autoencoder_vq_f4")
    entries.append(_entry("vq-f4", vq, "config", {
        "description": "ResShift's VQ-f4 autoencoder (latent space of every ResShift model)",
        "role": "autoencoder",
        "tasks": [],
        "methods": ["resshift"],
        "downsample": 4,
        "diffusion": None,
        "source": RESSHIFT_SOURCE + " ldm/models/autoencoder.py::VQModelTorch",
    }))
    return entries


def render(entries: list[dict[str, Any]]) -> str:
    return json.dumps({"version": 1, "models": entries}, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=Path, default=DEFAULT_REFS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is out of date")
    args = ap.parse_args(argv)
    text = render(build(args.refs))
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print("models.json is up to date" if same else f"{args.out} differs from the manifests")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
