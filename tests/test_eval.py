"""The evaluation harness end to end on two tiny crops of Set5 (seconds, CPU).

Why these checks: the harness is what turns restorations into published numbers, so the tests pin what a
reader of the report relies on — one row per image × method in results.csv, a summary table with the best
value in bold, real PNG grids and plots, provenance in report.json, that ``--resume`` does not recompute,
that every method sees the same observation, and that user mistakes exit 2 having written nothing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from needs import require
from PIL import Image

from diffrestore.cli.main import main
from diffrestore.eval import methods as M
from diffrestore.eval.protocol import Protocol, builtin_protocols, load_protocol
from diffrestore.eval.runner import FIELDS, image_seed, prepare_problem
from diffrestore.io.images import read_image, write_image

SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "Set5"
if not SET5.is_dir():
    SET5 = Path("/work/shared/data/eval/Set5")
REFS = SET5.parents[2] / "refs"
require(SET5, "shared eval photos (Set5)")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 48x48 centre crops of Set5 photos (48 = a multiple of 4, 8, 16)."""
    d = tmp_path_factory.mktemp("tiny")
    for name in ("baby", "bird"):
        x = read_image(SET5 / f"{name}.png")
        H, W = x.shape[-2:]
        write_image(d / f"{name}.png", x[..., H // 2 - 24 : H // 2 + 24, W // 2 - 24 : W // 2 + 24])
    return d


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _sr4(tiny: Path, out: Path, *extra: str) -> int:
    return main(["eval", "--data", str(tiny), "--task", "sr", "--scale", "4", "--methods", "bicubic,pinv",
                 "--out", str(out), "--no-progress", *extra])


def test_sr4_end_to_end(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert _sr4(tiny, out) == 0
    rows = _rows(out)
    assert [(r["image"], r["method"]) for r in rows] == [
        ("baby.png", "bicubic"), ("baby.png", "pinv"), ("bird.png", "bicubic"), ("bird.png", "pinv")]
    assert list(rows[0]) == list(FIELDS)
    for r in rows:
        assert r["status"] == "ok" and (r["height"], r["width"]) == ("48", "48")
        for k in ("psnr", "ssim", "psnr_y", "ssim_y", "consistency", "wall_s", "peak_rss_mb"):
            assert math.isfinite(float(r[k])), k
        assert r["niqe"] == "" and r["lpips"] == ""  # 48 px is too small for NIQE; no LPIPS weights
    pinv = [r for r in rows if r["method"] == "pinv"]
    assert all(float(r["consistency"]) < 1e-6 for r in pinv)  # avg-pool: A A⁺ = I exactly
    bic = [r for r in rows if r["method"] == "bicubic"]
    assert all(float(r["consistency"]) > 1e-4 for r in bic)  # bicubic does not honour the avg-pool y

    md = (out / "summary.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and ("Bicubic" in ln or "A⁺y" in ln)]
    assert len(table) >= 2 and any("**" in ln for ln in table[:2])
    assert "LPIPS: not computed (no local backbone weights" in md and "FID: not computed" in md
    assert "border of 4 px" in md

    for grid in (out / "grids").glob("*.png"):
        with Image.open(grid) as im:
            assert im.format == "PNG" and im.size[0] > 3 * 160
    assert len(list((out / "grids").glob("*.png"))) == 2
    for plot in ("psnr_vs_time.png", "psnr_scatter.png"):
        with Image.open(out / "plots" / plot) as im:
            assert im.format == "PNG" and min(im.size) > 100

    rep = json.loads((out / "report.json").read_text())
    assert {"diffrestore", "torch", "numpy"} <= set(rep["versions"])
    assert rep["versions"]["torch"] and rep["versions"]["diffrestore"]
    assert rep["seeds"]["protocol"] == [0]
    seeds = {"baby_s0": image_seed(0, "baby.png"), "bird_s0": image_seed(0, "bird.png")}
    assert rep["seeds"]["images"] == seeds
    op = rep["operator"]["baby_s0"]
    assert op["op"] == "AvgPoolSR" and op["scale"] == 4 and op["x_shape"] == [3, 48, 48]
    assert rep["protocol"]["task"] == "sr" and rep["metrics"]["lpips"].startswith("not computed")
    assert rep["machine"]["cpu_count"] >= 1
    assert rep["summary"]["bicubic"]["psnr_y"]["n"] == 2
    assert "computed" in capsys.readouterr().out


def test_resume_does_not_recompute(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = M.METHODS["pinv"].run
    assert real is not None

    def counting(p: M.Problem, opts: dict) -> M.MethodOutput:
        calls.append(p.name)
        return real(p, opts)

    monkeypatch.setattr(M.METHODS["pinv"], "run", counting)
    out = tmp_path / "rep"
    assert _sr4(tiny, out, "--limit", "1") == 0  # "interrupted" after the first image
    assert calls == ["baby.png"]
    assert _sr4(tiny, out, "--resume") == 0
    assert calls == ["baby.png", "bird.png"]  # only the missing image
    assert _sr4(tiny, out, "--resume") == 0
    assert calls == ["baby.png", "bird.png"]  # nothing left to do
    rows = _rows(out)
    assert len(rows) == 4 and len({(r["image"], r["method"]) for r in rows}) == 4
    assert "| A⁺y | 2 |" in (out / "summary.md").read_text()
    # without --resume an existing report is never overwritten; another protocol cannot resume it
    assert _sr4(tiny, out) == 2
    assert main(["eval", "--data", str(tiny), "--task", "sr", "--scale", "8", "--methods", "pinv",
                 "--out", str(out), "--no-progress", "--resume"]) == 2


def test_same_observation_for_every_method(tiny: Path) -> None:
    p = Protocol(task="inpaint", data=str(tiny), operator={"kind": "random", "rate": 0.5}, noise=5.0)
    a = prepare_problem(p, tiny / "baby.png", 0)
    b = prepare_problem(p, tiny / "baby.png", 0)
    c = prepare_problem(p, tiny / "bird.png", 0)
    d = prepare_problem(p, tiny / "baby.png", 1)
    assert torch.equal(a.y, b.y) and torch.equal(a.op.mask, b.op.mask)
    assert not torch.equal(a.op.mask, c.op.mask)  # the mask depends on the image name...
    assert not torch.equal(a.op.mask, d.op.mask)  # ...and on the protocol seed


def test_not_applicable_and_inpaint_baseline(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    rc = main(["eval", "--data", str(tiny), "--task", "inpaint", "--mask-kind", "box", "--methods",
               "biharmonic,bicubic,pinv", "--out", str(out), "--limit", "1", "--no-progress"])
    assert rc == 0
    rows = _rows(out)
    assert [r["method"] for r in rows] == ["biharmonic", "pinv"]  # bicubic: not applicable, no row
    bih, pinv = rows
    assert float(bih["psnr"]) > float(pinv["psnr"]) + 3  # filling the hole beats leaving it black
    md = (out / "summary.md").read_text()
    assert "Bicubic: not applicable" in md


def test_user_errors_exit_2(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    cases = [
        ["--task", "sr", "--methods", "bicubic,nosuch"],
        ["--task", "nosuch", "--methods", "pinv"],
        ["--task", "sr", "--methods", "shred,pinv", "--iters", "-1"],  # a method option out of range
        ["--task", "sr", "--methods", "pinv", "--iters", "3"],  # an option no listed method takes
        ["--task", "sr", "--methods", "adir", "--adapt", "knn"],  # knn without --neighbours
        ["--task", "sr", "--methods", "pinv", "--op", "nosuch=1"],
    ]
    for extra in cases:
        capsys.readouterr()
        assert main(["eval", "--data", str(tiny), "--out", str(out), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("diffrestore: error:") and "\n" not in err
        assert not out.exists()
    capsys.readouterr()
    assert main(["eval", "--data", str(tmp_path / "missing"), "--task", "sr", "--out", str(out)]) == 2
    # a missing checkpoint is found before any image is restored (here: an official ResShift file)
    assert "resshift-bicsr" in _err_of(["eval", "--data", str(tiny), "--task", "sr", "--methods",
                                        "resshift", "--model", "resshift-bicsr", "--models-dir",
                                        str(tmp_path / "none"), "--out", str(out)], capsys)


def _err_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def test_builtin_protocols_load(tmp_path: Path) -> None:
    names = builtin_protocols()
    assert {"set5_sr4", "sr4_avgpool", "sr8_avgpool", "sr16_avgpool", "inpaint_box", "cs1_pixels",
            "cs5_pixels", "blind_deconv", "resshift_bicsr_x4"} <= set(names)
    for name in names:
        p = load_protocol(name)
        assert p.name == name and p.description
    assert load_protocol("blind_deconv").requires == ["shred"]
    toml = tmp_path / "p.toml"
    toml.write_text('task = "sr"\nmethods = ["pinv"]\nseeds = [1, 2]\n[operator]\nscale = 8\n')
    p = load_protocol(toml)
    assert p.operator == {"scale": 8} and p.seeds == [1, 2] and p.scale() == 8
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "sr", "method": ["pinv"]}')
    with pytest.raises(Exception, match="unknown protocol key"):
        load_protocol(bad)


def test_ddnm_small_model(tiny: Path, tmp_path: Path) -> None:
    """DDNM through diffrestore.api with the small stand-in network and 3 steps (not a quality test)."""
    model, config = REFS / "adm_small.safetensors", REFS / "adm_small.json"
    require(model, "refs stand-in model")
    out = tmp_path / "rep"
    rc = main(["eval", "--data", str(tiny), "--task", "sr", "--scale", "4", "--methods", "ddnm,pinv",
               "--model", str(model), "--config", str(config), "--steps", "3", "--limit", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    rows = {r["method"]: r for r in _rows(out)}
    d = rows["ddnm"]
    assert d["status"] == "ok" and int(float(d["network_calls"])) > 0 and d["model"]
    assert float(d["consistency"]) < 1e-5  # DDNM keeps A x = y (noise-free) to float precision
    assert math.isfinite(float(d["seam_score"])) and rows["pinv"]["seam_score"] == ""  # 48 px = 2x2 tiles
    rep = json.loads((out / "report.json").read_text())
    assert rep["models"]["used"]["ddnm"]["options"]["steps"] == 3
    assert rep["models"]["used"]["ddnm"]["run"]["file"].endswith("adm_small.safetensors")
    assert (out / "images" / "ddnm" / "baby_s0.png").exists()


def _random_lpips_state(net: str) -> dict[str, torch.Tensor]:
    """A state_dict in the lpips package's layout (random values: plumbing only, not a metric value)."""
    from diffrestore.eval.lpips import _NETS

    g = torch.Generator().manual_seed(0)
    spec, sd, c_in = _NETS[net], {}, 3
    slices = [0, *[t + 1 for t in spec["taps"]]]
    for i in sorted(spec["convs"]):
        k = 11 if (net == "alex" and i == 0) else 5 if (net == "alex" and i == 3) else 3
        vgg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
        alex = {0: 64, 3: 192, 6: 384, 8: 256, 10: 256}
        c_out = alex[i] if net == "alex" else vgg[sorted(spec["convs"]).index(i)]
        s = next(n for n in range(1, 6) if slices[n - 1] <= i < slices[n])
        sd[f"net.slice{s}.{i}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * 0.05
        sd[f"net.slice{s}.{i}.bias"] = torch.zeros(c_out)
        c_in = c_out
    for k, c in enumerate(spec["chns"]):
        sd[f"lin{k}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g)
    sd["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    return sd


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_plumbing(tiny: Path, tmp_path: Path, net: str) -> None:
    from diffrestore.eval.lpips import LPIPS

    path = tmp_path / f"{net}.pth"
    torch.save(_random_lpips_state(net), path)
    model = LPIPS.from_file(path)
    assert model.net == net
    x = read_image(tiny / "baby.png")
    assert float(model(x, x)) == 0.0 and float(model(x, x.flip(-1))) > 0
    if net == "alex":
        out = tmp_path / "rep"
        assert _sr4(tiny, out, "--limit", "1", "--lpips-weights", str(path)) == 0
        assert all(math.isfinite(float(r["lpips"])) for r in _rows(out))
        assert "LPIPS: computed with" in (out / "summary.md").read_text()
    bad = tmp_path / "bad.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, bad)
    with pytest.raises(Exception, match="no backbone weights"):
        LPIPS.from_file(bad)
