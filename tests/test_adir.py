"""ADIR (METHODS §5): guidance formula, plain-DDPM limit, consistency gain, adaptation on a copy, adapter
round trip, and the incremental retrieval index. Tiny random ADM nets on 8x8 images: seconds on CPU."""

from __future__ import annotations

import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY_ADM as TINY

from diffrestore.cli.main import main
from diffrestore.diffusion.denoiser import Denoiser
from diffrestore.diffusion.noise import SeededNoise
from diffrestore.diffusion.schedules import linear_betas, respace_betas, respaced_timesteps
from diffrestore.diffusion.variance import p_mean_variance, posterior_arrays
from diffrestore.errors import UserError
from diffrestore.io.index import PriorEmbedder, build_index, load_index, query, spherical_distance
from diffrestore.methods.adir import adapt, adir_guidance, adir_sample, self_crops
from diffrestore.nets.adm import build_unet
from diffrestore.nets.lora import load_lora_file, save_lora
from diffrestore.operators.sr import AvgPoolSR

pytestmark = pytest.mark.usefixtures("one_thread")


def _den(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    net = build_unet(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Denoiser(net.eval().requires_grad_(False), linear_betas(1000), learned_sigma=False)


def _smooth(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 3, 3, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def problem() -> tuple[Denoiser, AvgPoolSR, torch.Tensor, torch.Tensor]:
    den = _den()
    op = AvgPoolSR(2)
    x = _smooth(2, seed=1)
    return den, op, x, op.A(x)


def test_guidance_is_At_residual_over_sigma2_sqrt_abar(problem) -> None:
    _, op, x, y = problem
    x0 = torch.randn_like(x)
    ab = 0.37
    g = adir_guidance(op, x0, y, ab, sigma_y=0.2)
    hand = op.At(y - op.A(x0)) / (0.2**2 * math.sqrt(ab))
    assert torch.allclose(g, hand, rtol=1e-5, atol=1e-6)
    g1 = adir_guidance(op, x0, y, torch.full((2, 1, 1, 1), ab), sigma_y=None)  # unknown sigma: s absorbs it
    assert torch.allclose(g1, op.At(y - op.A(x0)) / math.sqrt(ab), rtol=1e-5, atol=1e-6)


def _plain_ddpm(den: Denoiser, shape: tuple[int, ...], steps: int, seed: int) -> torch.Tensor:
    kept = respaced_timesteps(1000, steps)
    rb = respace_betas(den.betas, kept)
    noise = SeededNoise(seed)
    x = noise.draw(shape)
    for i in reversed(range(len(kept))):
        with torch.no_grad():
            out = den.model_output(x, kept[i])
        pmv = p_mean_variance(out, x, torch.full((shape[0],), i), rb, True, "fixed_small")
        x = pmv["mean"] + (pmv["variance"].sqrt() * noise.draw(shape) if i > 0 else 0)
    return x


def test_scale_zero_is_plain_ddpm_and_first_step_shift(problem) -> None:
    den, op, x, y = problem
    ref = _plain_ddpm(den, tuple(x.shape), 6, seed=3)
    for kw in ({"scale": 0.0}, {"guidance": "none"}):
        out = adir_sample(den, op, y, noise=SeededNoise(3), steps=6, **kw)
        assert torch.allclose(out, ref, atol=1e-6)
    # one guided step moves the mean by exactly s * Sigma_t * g_t (same x_T, same x0hat)
    seen: dict[str, list[torch.Tensor]] = {"plain": [], "guided": []}
    for name, s in (("plain", 0.0), ("guided", 5.0)):
        adir_sample(den, op, y, noise=SeededNoise(3), steps=6, scale=s, sigma_y=0.5,
                    callback=lambda k, n, x0, x, _l=seen[name], **_: _l.append((x0, x)))
    kept = respaced_timesteps(1000, 6)
    var = float(posterior_arrays(respace_betas(den.betas, kept))["posterior_variance"][-1])
    x0 = seen["plain"][0][0]
    g = op.At(y - op.A(x0)) / (0.5**2 * den.abar(kept[-1]).sqrt())
    shift = seen["guided"][0][1] - seen["plain"][0][1]
    assert torch.allclose(shift, 5.0 * var * g, rtol=1e-4, atol=1e-5)


def test_guided_is_more_consistent(problem) -> None:
    den, op, x, y = problem
    res = {}
    for name, kw in {
        "none": {"guidance": "none"},
        "adir": {"guidance": "adir", "scale": 30.0},
        "dps": {"guidance": "dps", "scale": 0.5},
    }.items():
        out = adir_sample(den, op, y, noise=SeededNoise(0), steps=20, **kw)
        res[name] = float((op.A(out) - y).norm())
    assert res["adir"] < 0.5 * res["none"]
    assert res["dps"] < res["none"]


def test_constrain_hook_and_callback(problem) -> None:
    den, op, x, y = problem
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :, :4] = True
    calls = []

    def pin(x0: torch.Tensor, step: int) -> torch.Tensor:
        return torch.where(mask, x, x0)

    out = adir_sample(den, op, y, noise=SeededNoise(0), steps=5, constrain_x0=pin,
                      callback=lambda k, n, **info: calls.append((k, n, sorted(info))))
    assert [c[0] for c in calls] == list(range(5)) and calls[0][1] == 5
    assert calls[0][2] == ["residual", "t", "x", "x0"]
    assert torch.allclose(out[mask], x[mask], atol=1e-5)  # the last step returns the pinned x0hat
    with pytest.raises(UserError):
        adir_sample(den, op, y, noise=SeededNoise(0), steps=5, guidance="nope")  # type: ignore[arg-type]


def test_adapt_on_a_copy_and_adapter_roundtrip(tmp_path: Path) -> None:
    den = _den()
    before = {k: v.clone() for k, v in den.net.state_dict().items()}
    images = _smooth(3, size=12, seed=4)
    ev = _smooth(8, seed=9)
    t = torch.tensor([30, 150, 300, 500, 650, 800, 900, 999])
    eps = torch.randn(ev.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss0 = float(den.training_loss(ev, t, noise=eps))
    losses: list[float] = []
    ad, state = adapt(den, images, steps=60, batch=4, lr=3e-3, ema=0.5, rank=4, crop=8, seed=0,
                      callback=lambda k, n, loss, **_: losses.append(loss))
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    after = den.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is bit-identical
    assert ad.net is not den.net and state and all(k.endswith((".lora.A", ".lora.B")) for k in state)
    with torch.no_grad():
        loss1 = float(ad.training_loss(ev, t, noise=eps))
    assert loss1 < loss0
    # adapter file round trip onto a fresh copy of the same base
    path = save_lora(ad.net, tmp_path / "ad.safetensors", base_name="tiny")
    fresh = den.copy_for_adaptation()
    load_lora_file(fresh.net, path, base_name="tiny")
    xt = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(fresh.eps(xt, 200), ad.eps(xt, 200), atol=1e-6)
    # full fine-tuning (the paper's variant) also leaves the original alone
    ad2, st2 = adapt(den, images, steps=2, batch=2, lr=1e-3, rank=None, crop=8)
    assert set(st2) == set(before)
    assert all(torch.equal(before[k], den.net.state_dict()[k]) for k in before)
    crops = self_crops(images[0], n=5, crop=8, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (5, 3, 8, 8)


# ------------------------------------------------------------------------------------------ retrieval index


class _Counting:
    """Colour-statistics embedding that counts its calls."""

    spec = "counting-test"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        f = torch.nn.functional.adaptive_avg_pool2d(x01, 2).flatten(1)
        return torch.cat([f, x01.std(dim=(2, 3))], dim=1)


def _write(path: Path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    a = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(path)


def test_index_incremental_and_query(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        _write(folder / f"a{i}.png", i)
    _write(folder / "sub" / "b.png", 10)
    out = tmp_path / "idx.safetensors"
    emb = _Counting()
    idx = build_index(folder, out, emb)
    assert emb.calls == 4 and idx.stats["embedded"] == 4 and idx.embeddings.shape[0] == 4
    _write(folder / "new.png", 20)
    emb.calls = 0
    idx = build_index(folder, out, emb)
    assert emb.calls == 1 and idx.stats == {"embedded": 1, "reused": 4, "removed": 0, "total": 5}
    st = (folder / "a0.png").stat()  # touched, same bytes: hash says unchanged
    os.utime(folder / "a0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (folder / "a1.png").unlink()
    _write(folder / "a2.png", 99)  # changed content
    emb.calls = 0
    idx = build_index(folder, out, emb)
    assert emb.calls == 1 and idx.stats == {"embedded": 1, "reused": 3, "removed": 1, "total": 4}
    loaded = load_index(out)
    assert [e["path"] for e in loaded.entries] == ["a0.png", "a2.png", "new.png", "sub/b.png"]
    assert torch.equal(loaded.embeddings, idx.embeddings)
    hits = query(loaded, folder / "sub" / "b.png", k=3, embed=emb)
    assert Path(hits[0][0]) == (folder / "sub" / "b.png").resolve() and hits[0][1] < 1e-3
    assert [d for _, d in hits] == sorted(d for _, d in hits) and len(hits) == 3
    with pytest.raises(UserError):
        query(loaded, folder / "a0.png", k=1, embed=_Other())  # another embedding than the index
    d = spherical_distance(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 2.0], [-1.0, 0.0], [3.0, 0.0]]))
    assert torch.allclose(d, torch.tensor([math.pi / 2, math.pi, 0.0]))


class _Other(_Counting):
    spec = "other"


def test_prior_embedder_is_deterministic() -> None:
    emb = PriorEmbedder(_den(), t=100, draws=2)
    x = torch.rand(1, 3, 20, 30)
    a, b = emb(x), emb(x)
    assert a.shape == (1, 64) and torch.equal(a, b)
    assert emb.spec == "prior|size=8|t=100|draws=2|seed=0"


def test_cli_index_with_python_embedding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "myembed.py").write_text(textwrap.dedent("""
        import torch
        def colour(x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _write(folder / f"p{i}.png", i)
    out = tmp_path / "i.safetensors"
    assert main(["index", "build", str(folder), "--out", str(out), "--embed", "python:myembed:colour",
                 "--quiet"]) == 0
    assert "3 images (3 embedded" in capsys.readouterr().out
    assert main(["index", "query", str(out), str(folder / "p1.png"), "--k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith("p1.png")
    assert main(["index", "query", str(tmp_path / "missing"), str(folder / "p1.png")]) == 2
    sys.modules.pop("myembed", None)
