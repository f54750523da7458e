"""Model registry: entries match the manifests, models dir lookup, clear errors, named and user models."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from diffrestore.errors import UserError
from diffrestore.io import registry
from diffrestore.io.checkpoints import load_state_dict, save_state_dict

NAMES = [
    "default", "adm-256-uncond", "adm-256-cond", "adm-256-classifier", "ddpm-celebahq", "resshift-realsr-v3",
    "resshift-realsr-v1", "resshift-realsr-v2", "resshift-bicsr", "vq-f4",
]


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def test_names_and_required_fields() -> None:
    specs = registry.known_models()
    assert [s.name for s in specs] == NAMES
    for s in specs:
        assert s.file and s.role in ("denoiser", "classifier", "autoencoder")
        if not s.embedded:
            assert s.family and s.config and s.size and s.num_params and s.urls
            assert s.url and s.url.startswith("https://") and s.url.endswith(s.file)
            assert s.size >= 4 * s.num_params  # float32 payload (ResShift adds int64 buffers)
    by = {s.name: s for s in specs}
    assert by["adm-256-uncond"].diffusion == {
        "type": "ddpm", "schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "steps": 1000,
        "learn_sigma": True, "predict": "eps"}
    assert by["adm-256-uncond"].image_size == 256 and not by["adm-256-uncond"].class_cond
    assert by["adm-256-cond"].class_cond and by["adm-256-cond"].config["num_classes"] == 1000
    assert by["resshift-realsr-v3"].diffusion["steps"] == 4
    assert by["resshift-realsr-v1"].diffusion["steps"] == 15
    assert by["resshift-realsr-v3"].requires == ["vq-f4"] and by["resshift-realsr-v3"].extra["scale"] == 4
    assert by["resshift-bicsr"].extra["degradation"] == "bicubic"
    assert by["ddpm-celebahq"].urls[1].startswith("https://drive.google.com/")


def test_models_json_is_generated_from_the_manifests(refs_dir: Path) -> None:
    path = Path(__file__).resolve().parents[1] / "tools" / "gen_models_json.py"
    spec = importlib.util.spec_from_file_location("gen_models_json", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)  # type: ignore[union-attr]
    shipped = (Path(registry.__file__).parent / "models.json").read_text()
    assert gen.render(gen.build(refs_dir)) == shipped, "run tools/gen_models_json.py"
    for s in registry.known_models():
        if s.embedded:
            continue
        stem = Path(s.file).stem
        man = json.loads((refs_dir / "manifests" / f"{stem}.keys.json").read_text())
        cls = "EncoderUNetModel" if s.family == "adm_classifier" else "UNetModel"
        want = man.get(f"config_resolved_{cls}")
        assert s.config == (want if s.family.startswith("adm") else man["config"])
        assert s.num_params == man["num_params"] and s.family == man["family"]


@pytest.mark.parametrize("name", [n for n in NAMES if n != "default"])
def test_every_named_model_builds_on_meta_with_its_param_count(name: str) -> None:
    spec = registry.get_spec(name)
    net = registry.build(spec, meta=True)
    assert sum(p.numel() for p in net.parameters()) == spec.num_params
    sd = net.state_dict()
    assert sum(v.numel() * v.element_size() for v in sd.values()) == spec.size


def test_models_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    default = registry.models_dir()
    assert default.name == "models" and "diffrestore" in str(default)
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "env"))
    assert registry.models_dir() == tmp_path / "env"
    assert registry.models_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv(registry.ENV_VAR, "~/m")
    assert registry.models_dir() == Path("~/m").expanduser()


def test_unknown_name_lists_known() -> None:
    with pytest.raises(UserError) as e:
        registry.resolve("adm-512")
    msg = _one_line(e)
    assert "unknown model 'adm-512'" in msg and "adm-256-uncond" in msg and "vq-f4" in msg
    with pytest.raises(UserError):
        registry.get_spec("nope")


def test_missing_named_file_says_where_and_url(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        registry.resolve("vq-f4", models_dir=tmp_path)
    msg = _one_line(e)
    assert str(tmp_path / "autoencoder_vq_f4.pth") in msg
    assert "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/autoencoder_vq_f4.pth" in msg
    assert registry.file_status(registry.get_spec("vq-f4"), tmp_path) == "missing"


def test_incomplete_and_present_named_file(tmp_path: Path) -> None:
    spec = registry.get_spec("vq-f4")
    f = tmp_path / spec.file
    f.write_bytes(b"partial download")
    assert registry.file_status(spec, tmp_path) == "incomplete"
    with pytest.raises(UserError, match="looks incomplete"):
        registry.resolve("vq-f4", models_dir=tmp_path)
    with open(f, "wb") as fh:  # sparse file of the expected size: "present" without using disk
        fh.truncate(spec.size)
    assert registry.file_status(spec, tmp_path) == "present"
    assert registry.resolve("vq-f4", models_dir=tmp_path).path == f
    conv = tmp_path / "autoencoder_vq_f4.safetensors"  # a converted copy is preferred
    conv.write_bytes(b"x")
    assert registry.resolve("vq-f4", models_dir=tmp_path).path == conv


def test_default_prior_absent_is_reported_gracefully() -> None:
    spec = registry.get_spec("default")
    assert spec.embedded
    prior = registry.candidates(spec)[0]
    assert prior.parts[-3:] == ("data", "prior", "prior.safetensors")
    if prior.is_file() and spec.family:
        assert registry.resolve("default").path == prior
        assert registry.file_status(spec) == "present"
    else:
        assert registry.file_status(spec) == "missing"
        with pytest.raises(UserError) as e:
            registry.resolve("default")
        assert "not bundled" in _one_line(e) and "adm-256-uncond" in str(e.value)


@pytest.fixture
def adm_small(refs_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    src = refs_dir / "nets" / "adm_small"
    shutil.copy(src / "weights.safetensors", tmp_path / "adm.safetensors")
    shutil.copy(src / "config.json", tmp_path / "adm_config.json")
    return tmp_path / "adm.safetensors", tmp_path / "adm_config.json"


def test_user_checkpoint_needs_a_config(adm_small: tuple[Path, Path]) -> None:
    weights, cfg = adm_small
    with pytest.raises(UserError) as e:
        registry.resolve(weights)
    assert "needs a model config JSON" in _one_line(e) and "adm.json" in str(e.value)
    spec = registry.resolve(weights, cfg)
    assert spec.family == "adm_unet" and spec.path == weights and spec.image_size == 32
    assert spec.diffusion and spec.diffusion["learn_sigma"] is True and spec.diffusion["steps"] == 1000
    shutil.copy(cfg, weights.with_suffix(".json"))  # sidecar <stem>.json is picked up
    assert registry.resolve(weights).family == "adm_unet"
    with pytest.raises(UserError, match="model file not found"):
        registry.resolve(weights.parent / "other.pt", cfg)


def test_bad_user_configs(adm_small: tuple[Path, Path], tmp_path: Path) -> None:
    weights, _ = adm_small
    for data, pattern in [
        ({"family": "unet9000", "config": {}}, "'family' must be one of"),
        ({"family": "adm_unet"}, "'config' must be an object"),
        ({"family": "resshift_swinunet", "config": {"image_size": 64}}, "needs a 'diffusion' entry"),
    ]:
        with pytest.raises(UserError, match=pattern):
            registry.resolve(weights, data)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        registry.resolve(weights, tmp_path / "bad.json")
    with pytest.raises(UserError, match="config JSON not found"):
        registry.resolve(weights, tmp_path / "none.json")
    with pytest.raises(UserError, match="invalid adm_unet config"):
        registry.load_model(weights, {"family": "adm_unet", "config": {"no_such_kwarg": 1}})


def test_load_user_model(adm_small: tuple[Path, Path]) -> None:
    weights, cfg = adm_small
    net, spec = registry.load_model(weights, cfg)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    want = load_state_dict(weights)
    got = net.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    net16, _ = registry.load_model(weights, cfg, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in net16.parameters())


def test_load_model_key_errors_are_one_line(adm_small: tuple[Path, Path], tmp_path: Path) -> None:
    weights, cfg = adm_small
    sd = load_state_dict(weights)
    first = next(iter(sd))
    save_state_dict({k: v for k, v in sd.items() if k != first}, tmp_path / "missing.safetensors")
    save_state_dict({**sd, "label_emb.weight": torch.zeros(3, 4)}, tmp_path / "extra.pt")
    for name, pattern in [("missing.safetensors", "1 missing key"), ("extra.pt", "1 unexpected key")]:
        with pytest.raises(UserError) as e:
            registry.load_model(tmp_path / name, cfg)
        assert pattern in _one_line(e)


def test_load_named_model_from_models_dir(
    adm_small: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, cfg = adm_small
    entry = {"name": "tiny", "file": "tiny.safetensors", "family": "adm_unet",
             "config": json.loads(cfg.read_text())["config"], "size": None, "urls": ["https://x/tiny"],
             "tasks": ["sr"], "diffusion": {"schedule": "linear", "steps": 1000}}
    original = registry._entries()
    monkeypatch.setattr(registry, "_entries", lambda: (*original, entry))
    (tmp_path / "m").mkdir()
    shutil.copy(weights, tmp_path / "m" / "tiny.safetensors")
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "m"))
    net, spec = registry.load_model("tiny")
    assert spec.name == "tiny" and spec.path == tmp_path / "m" / "tiny.safetensors"
    assert spec.tasks == ["sr"]
    with pytest.raises(UserError, match="a config JSON is only for checkpoint files"):
        registry.resolve("tiny", cfg)


def test_bundled_prior_is_used_when_present(
    adm_small: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, cfg = adm_small
    prior = tmp_path / "pkgdata" / "prior"
    prior.mkdir(parents=True)
    shutil.copy(weights, prior / "prior.safetensors")
    data = json.loads(cfg.read_text())
    (prior / "prior.json").write_text(json.dumps({  # the fields train/export.py writes
        "name": "prior", "family": data["family"], "config": data["config"], "patch_size": 32,
        "diffusion": {"schedule": "linear", "steps": 1000, "learn_sigma": True}, "params": 1422278,
        "tasks": ["sr", "inpaint"]}))
    monkeypatch.setattr(registry, "_prior_dir", lambda: prior)
    spec = registry.get_spec("default")
    assert spec.family == "adm_unet" and spec.tasks == ["sr", "inpaint"] and spec.image_size == 32
    assert spec.num_params == 1422278 and spec.size == (prior / "prior.safetensors").stat().st_size
    assert registry.file_status(spec) == "present"
    net, spec = registry.load_model("default")
    assert spec.path == prior / "prior.safetensors" and not net.training
