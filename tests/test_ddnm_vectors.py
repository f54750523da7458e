"""DDNM / DDNM+ against the official main sampler (``refs/ddnm_sampler_small``), plus paper-mode checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import Replay, SeededNoise
from diffrestore.diffusion.trace import tracer
from diffrestore.methods.ddnm import ddnm
from diffrestore.methods.ddnm_official_ops import (
    OfficialColorization,
    OfficialSRConv,
    official_bicubic_kernel,
)
from diffrestore.operators.denoise import Identity
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.sr import AvgPoolSR

CASES = ["sr4_avgpool", "sr2_avgpool_sigma", "inpaint_travel", "colorization_svd_sigma", "sr4_bicubic_svd"]


@pytest.fixture(scope="module")
def denoiser(denoiser: Denoiser) -> Denoiser:
    """conftest's adm_small denoiser, run single-threaded for these vectors."""
    torch.set_num_threads(1)
    return denoiser


def _load(refs_dir: Path, case: str):
    d = refs_dir / "ddnm_sampler_small" / case
    c = json.loads((d / "case.json").read_text())
    data = load_file(str(d / "data.safetensors"))
    noise = Replay.from_safetensors(data)
    y = data["in.y"]
    svd = c["deg"] in ("colorization", "sr_bicubic")
    if c["deg"] == "sr_averagepooling":
        op = AvgPoolSR(int(c["deg_scale"]))  # the simplified official operators are the generic ones
    elif c["deg"] == "inpainting":
        op = Inpaint(data["in.mask"])
    elif c["deg"] == "colorization":
        op = OfficialColorization()
        y = y.reshape(1, 1, *c["size"])
        obs = noise.draw(y.shape)  # the observation-noise draw comes first (--add_noise)
        y_formed = op.A(data["in.x_gt"]) + 2 * c["sigma_y_arg"] * obs
        assert (y_formed - y).abs().max() < 1e-5
    else:
        op = OfficialSRConv(int(c["deg_scale"]), tuple(c["size"]))
        f = int(c["deg_scale"])
        y = y.reshape(1, 3, c["size"][0] // f, c["size"][1] // f)  # channel-major flattening
        assert torch.allclose(data["in.kernel"], official_bicubic_kernel(op.factor), atol=1e-7)
        assert (op.A(data["in.x_gt"]) - y).abs().max() < 1e-5
    # the official sampler takes sigma_y in [0, 1] units and doubles it; ddnm takes model units
    kw = dict(steps=c["T_sampling"], eta=c["eta"], sigma=2 * c["sigma_y_arg"],
              travel=(c["travel_length"], c["travel_repeat"]), svd=svd)
    return c, data, op, y, noise, kw


@pytest.mark.parametrize("case", CASES)
def test_official_vectors(refs_dir, denoiser, case):
    c, data, op, y, noise, kw = _load(refs_dir, case)
    trace: dict = {}
    with torch.no_grad():
        out = ddnm(denoiser, op, y, noise=noise, compat="official", callback=tracer(trace), **kw)
    assert noise.remaining == 0  # every recorded draw consumed, incl. the final step's unused one
    atol = c["atol"]
    high_t = {s["k"] for s in c["steps"] if s["kind"] == "denoise" and s["t_from"] >= 800}
    for key, want in data.items():
        if not key.startswith("trace."):
            continue
        name = key[len("trace."):]
        kind, _, k = name.partition(".")
        tol = 1e-3 if kind in ("x0", "x0hat") and int(k) in high_t else atol
        diff = (trace[name] - want).abs().max().item()
        assert diff <= tol, f"{case} {name}: {diff:.3g} > {tol}"
    assert (out - data["out.x0"]).abs().max().item() <= atol
    for got, want in zip(trace["steps"], c["steps"]):
        assert (got["t_from"], got["t_to"], got["kind"]) == (want["t_from"], want["t_to"], want["kind"])
        for s in ("sigma_t", "lambda_t", "gamma_t"):
            if s in want:
                assert abs(got[s] - want[s]) < 1e-6, (case, got["k"], s)


def test_official_colorization_basis_is_torch_svd():
    v = OfficialColorization()._v
    want = torch.tensor([[-0.57729, -0.57747, -0.57729], [-0.57747, 0.78858, -0.21135],
                         [-0.57729, -0.21135, 0.78871]])
    assert torch.allclose(v, want, atol=1e-4)


def test_paper_equals_official_on_svd_noise_free_path(refs_dir, denoiser):
    # README: ddnm_diffusion (SVD path, sigma_y = 0) is the plain DDIM(eta) blend, i.e. the paper formula
    c, data, op, y, noise, kw = _load(refs_dir, "sr4_bicubic_svd")
    with torch.no_grad():
        out = ddnm(denoiser, op, y, noise=noise, compat="paper", **kw)
    assert noise.remaining == 1  # paper mode skips the last step's unused draw
    assert (out - data["out.x0"]).abs().max() <= c["atol"]


@pytest.mark.parametrize("case", ["sr4_avgpool", "sr2_avgpool_sigma", "colorization_svd_sigma"])
def test_paper_differs_from_official(refs_dir, denoiser, case):
    # simplified path: sqrt(1-abar^2) double scaling; SVD DDNM+: extra sqrt(1-eta^2), unrotated z/eps
    c, data, op, y, noise, kw = _load(refs_dir, case)
    with torch.no_grad():
        out = ddnm(denoiser, op, y, noise=noise, compat="paper", **kw)
    assert (out - data["out.x0"]).abs().max() > 1e-2


def test_paper_ddnm_is_exactly_consistent(refs_dir, denoiser):
    _, _, op, y, _, kw = _load(refs_dir, "sr4_avgpool")
    with torch.no_grad():
        out = ddnm(denoiser, op, y, noise=SeededNoise(0), compat="paper", **{**kw, "steps": 10})
    assert (op.A(out) - y).abs().max() < 1e-5


def test_batched_streams_equal_single_runs(refs_dir, denoiser):
    _, data, op, y, _, kw = _load(refs_dir, "inpaint_travel")
    kw = {**kw, "steps": 6, "travel": (2, 2)}
    y2 = torch.cat([y, -y])
    with torch.no_grad():
        both = ddnm(denoiser, op, y2, noise=SeededNoise(5), streams=[3, 8], **kw)
        a = ddnm(denoiser, op, y, noise=SeededNoise(5), streams=[3], **kw)
        b = ddnm(denoiser, op, -y, noise=SeededNoise(5), streams=[8], **kw)
    assert (both - torch.cat([a, b])).abs().max() < 1e-5


def test_hooks_see_every_denoise_step(refs_dir, denoiser):
    _, _, op, y, _, kw = _load(refs_dir, "inpaint_travel")
    seen: list[int] = []
    pre: list[int] = []

    def constrain(x0hat: torch.Tensor, k: int) -> torch.Tensor:
        seen.append(k)
        return torch.zeros_like(x0hat)

    def before(x0: torch.Tensor, k: int) -> torch.Tensor:
        pre.append(k)
        return x0

    trace: dict = {}
    with torch.no_grad():
        out = ddnm(denoiser, op, y, noise=SeededNoise(1), constrain_x0=constrain, pre_correct=before,
                   callback=tracer(trace), **kw)
    denoise = [s["k"] for s in trace["steps"] if s["kind"] == "denoise"]
    assert seen == pre == denoise and len(seen) == 38
    assert out.abs().max() == 0  # the last x0hat (constrained to 0) is the output


def test_svd_rule_reduces_to_scalar_rule_for_unit_singular_values(refs_dir, denoiser):
    # denoising (A = I, all singular values 1): the SVD rule is the scalar rule
    _, data, _, _, _, kw = _load(refs_dir, "inpaint_travel")
    op = Identity()
    y = data["in.x_gt"] + 0.2 * SeededNoise(9).draw(data["in.x_gt"].shape)
    kw = {**kw, "steps": 8, "travel": (1, 1), "sigma": 0.2}
    kw.pop("svd")
    with torch.no_grad():
        a = ddnm(denoiser, op, y, noise=SeededNoise(2), svd=False, **kw)
        b = ddnm(denoiser, op, y, noise=SeededNoise(2), svd=True, **kw)
    assert (a - b).abs().max() < 1e-5


def test_svd_rule_with_a_real_svd_view(refs_dir, denoiser):
    # AvgPoolSR x2: singular values 1/2, so lambda < 1 starts earlier than with the scalar rule
    _, data, op, y, _, kw = _load(refs_dir, "sr2_avgpool_sigma")
    kw = {**kw, "svd": True}
    trace: dict = {}
    with torch.no_grad():
        out = ddnm(denoiser, op, y, noise=SeededNoise(4), callback=tracer(trace), **kw)
    lam = [s["lambda_min"] for s in trace["steps"]]
    assert torch.isfinite(out).all() and lam[0] == 1 and lam[-1] == 0
    assert all(a >= b for a, b in zip(lam, lam[1:]))
