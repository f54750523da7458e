"""``diffrestore models`` and ``diffrestore models verify``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffrestore.cli.main import main
from diffrestore.io import registry


def test_models_lists_every_name(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"models directory: {tmp_path}" in out
    for spec in registry.known_models():
        line = next(ln for ln in out.splitlines() if ln.startswith(spec.name + " "))
        # the embedded prior ships inside the package; every downloadable file is absent from tmp_path
        assert spec.file in line and ("present" if spec.embedded else "missing") in line
    assert "2.2 GB" in out and "adm_unet" in out


def test_models_list_shows_present_and_urls(
    capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = registry.get_spec("vq-f4")
    with open(tmp_path / spec.file, "wb") as f:
        f.truncate(spec.size)
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    assert main(["models", "list", "--urls"]) == 0
    out = capsys.readouterr().out
    assert next(ln for ln in out.splitlines() if ln.startswith("vq-f4 ")).split()[3] == "present"
    assert spec.urls[0] in out


def test_verify_without_vectors_exits_2(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["models", "verify", "--refs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffrestore: error: no network test vectors") and err.count("\n") == 1
    assert main(["models", "verify", "--refs", str(tmp_path / "absent")]) == 2


def _copy_vector(refs_dir: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "refs" / "nets" / name
    shutil.copytree(refs_dir / "nets" / name, dst)
    return tmp_path / "refs"


def test_verify_passes_and_detects_tampering(
    refs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    refs = _copy_vector(refs_dir, tmp_path, "ddpm_small")
    assert main(["models", "verify", "--refs", str(refs)]) == 0
    out = capsys.readouterr().out
    assert "ddpm_small/out " in out and "FAIL" not in out and "2/2 outputs pass" in out
    io_path = refs / "nets" / "ddpm_small" / "io.safetensors"
    io = load_file(str(io_path))
    io["out.out"] = io["out.out"] + 1e-3  # ten times the tolerance
    io_path.chmod(0o644)
    save_file(io, str(io_path))
    assert main(["models", "verify", "--refs", str(refs)]) == 1
    lines = capsys.readouterr().out.splitlines()
    bad = next(ln for ln in lines if ln.startswith("ddpm_small/out "))
    assert bad.endswith("FAIL") and abs(float(bad.split()[1]) - 1e-3) < 1e-4
    assert next(ln for ln in lines if ln.startswith("ddpm_small/grad_x ")).endswith("PASS")


def test_verify_broken_vector_fails_without_crashing(
    refs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    refs = _copy_vector(refs_dir, tmp_path, "ddpm_small")
    w = refs / "nets" / "ddpm_small" / "weights.safetensors"
    sd = load_file(str(w))
    sd.pop(next(iter(sd)))
    w.chmod(0o644)
    save_file(sd, str(w))
    assert main(["models", "verify", "--refs", str(refs)]) == 1
    out = capsys.readouterr().out
    assert "ddpm_small  -  -  FAIL (UserError:" in out and "missing key" in out


def test_verify_all_shared_refs(refs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """The real refs (all network vectors are small: ~2 s in total)."""
    torch.manual_seed(0)
    assert main(["models", "verify", "--refs", str(refs_dir)]) == 0
    out = capsys.readouterr().out
    names = ["adm_small", "adm_cond_small", "adm_classifier_small", "ddpm_small", "resshift_swinunet_small"]
    for name in [*names, "vq_f4_small"]:
        assert f"{name}/" in out
    assert "FAIL" not in out


def test_verify_only_filter(refs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "verify", "--refs", str(refs_dir), "--only", "vq_f4"]) == 0
    out = capsys.readouterr().out
    assert "vq_f4_small/indices  0  0  PASS" in out and "adm_small" not in out
    assert main(["models", "verify", "--refs", str(refs_dir), "--only", "nothing-like-this"]) == 2
