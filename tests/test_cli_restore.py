"""``diffrestore restore`` / ``degrade`` and ``diffrestore.restore`` end to end, with the small stand-in ADM.

Why end to end: the guarantees users rely on (output size, ‖A x − y‖ at float precision, exit 2 with one
line and nothing written, the same result for any tile batch) live in the seams between the CLI, the
operator factory, the model loader and the tiler, which unit tests of each part cannot see. Images are crops
of a real photo, tiles 32 px, 2–3 sampling steps: the stand-in prior is random, so only exact properties
(shapes, consistency, invariances, errors) are asserted, never quality.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import require
from PIL import Image

import diffrestore
from diffrestore.api import RestoreResult, restore
from diffrestore.cli.main import main
from diffrestore.errors import UserError
from diffrestore.io.images import read_image, read_mask
from diffrestore.operators.base import load_operator
from diffrestore.operators.compose import Compose
from diffrestore.operators.deblur import Blur, gaussian_kernel
from diffrestore.operators.inpaint import Inpaint
from diffrestore.operators.sr import AvgPoolSR

EVAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"
PHOTO = EVAL_DIR / "CBSD68" / "101085.png"  # 481x321, landscape
STEPS = "2"


class Opaque:
    """A class a checkpoint must never unpickle (stands for arbitrary code in a .pt file)."""


@pytest.fixture(scope="module")
def model_args(refs_dir: Path) -> list[str]:
    """CLI options selecting the stand-in prior (link-files resolved by the loader)."""
    return ["--model", str(refs_dir / "adm_small.safetensors"), "--config", str(refs_dir / "adm_small.json"),
            "--tile", "32", "--steps", STEPS, "--quiet"]


@pytest.fixture(scope="module")
def model_kw(refs_dir: Path) -> dict[str, object]:
    """The same for the Python API."""
    return dict(model=refs_dir / "adm_small.safetensors", config=refs_dir / "adm_small.json", tile=32,
                steps=int(STEPS))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Non-square crops of a real photo: ground truth 80x112 (HxW), its ×2 average-pooled LR 40x56, a
    40x56 crop, its grey version, a 20x28 crop (smaller than one tile) and a 40x56 hole mask."""
    require(PHOTO, "evaluation photo")
    d = tmp_path_factory.mktemp("photos")
    im = Image.open(PHOTO).convert("RGB")
    gt = im.crop((200, 120, 312, 200))  # 112x80
    gt.save(d / "gt.png")
    x = torch.from_numpy(np.asarray(gt, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    lr = AvgPoolSR(2).A(x)[0].permute(1, 2, 0).numpy()
    Image.fromarray(np.round(lr * 255).astype(np.uint8)).save(d / "lr.png")
    small = im.crop((200, 120, 256, 160))  # 56x40
    small.save(d / "small.png")
    small.convert("L").save(d / "grey.png")
    im.crop((10, 10, 38, 30)).save(d / "tiny.png")  # 28x20
    im.crop((100, 100, 196, 164)).save(d / "mid.png")  # 96x64: whole 32-px Hadamard blocks
    m = np.full((40, 56), 255, np.uint8)
    m[10:28, 14:40] = 0  # black = hole
    Image.fromarray(m).save(d / "mask.png")
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(d / "mask_wrong.png")
    return {p.stem: p for p in d.iterdir()}


def _run(args: list[str]) -> int:
    return main([str(a) for a in args])


def _rms(a: torch.Tensor) -> float:
    return float(a.double().square().mean().sqrt())


# ------------------------------------------------------------------------------------------------ (a)
def test_restore_sr_end_to_end(files: dict[str, Path], model_args: list[str], tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    """SR ×2 of a 40x56 LR photo: 112x80 PNG, the float .npy, ‖A x − y‖ at float precision, the summary."""
    out = tmp_path / "sr.png"
    assert _run(["restore", files["lr"], out, "--task", "sr", "--scale", "2", "--float", *model_args]) == 0
    cap = capsys.readouterr()
    assert Image.open(out).size == (112, 80)
    x = torch.from_numpy(np.load(tmp_path / "sr.npy"))
    assert x.shape == (1, 3, 80, 112) and x.dtype == torch.float32
    y = read_image(files["lr"])
    assert _rms(AvgPoolSR(2).A(x) - y) < 1e-5
    assert cap.out.startswith(f"wrote {out} (112x80) in ")
    assert "network calls; consistency |Ax-y| rms" in cap.out
    rms = float(cap.out.split("rms ")[1].split()[0])
    assert rms < 1e-5 and "seam score" in cap.out
    assert "-> task sr scale=2" in cap.err and "plan: msr: 80x112 image, 24 tiles of 32px" in cap.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.npy", "sr.png"]


# ------------------------------------------------------------------------------------------------ (b)
TASKS = {  # name: (input, task options, output size W x H)
    "sr-avgpool-tiny": ("tiny", ["--task", "sr", "--scale", "2"], (56, 40)),
    "sr-bicubic": ("small", ["--task", "sr", "--scale", "2", "--kernel", "bicubic"], (112, 80)),
    "inpaint-mask": ("small", ["--task", "inpaint", "--mask", "@mask"], (56, 40)),
    "inpaint-random": ("small", ["--task", "inpaint", "--mask-kind", "random", "--rate", "0.7"], (56, 40)),
    "colorize": ("grey", ["--task", "colorize"], (56, 40)),
    "denoise": ("small", ["--task", "denoise", "--sigma-y", "0.05"], (56, 40)),
    "deblur": ("small", ["--task", "deblur", "--kernel", "gaussian", "--blur-sigma", "1.0"], (56, 40)),
    "deblur-tiny": ("tiny", ["--task", "deblur", "--kernel", "gaussian", "--blur-sigma", "0.5"], (28, 20)),
    "oldphoto": ("grey", ["--task", "oldphoto", "--scale", "2"], (112, 80)),
    "inpaint-hierarchical": ("small", ["--task", "inpaint", "--mask-kind", "box", "--hierarchical"],
                             (56, 40)),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_runs(name: str, files: dict[str, Path], model_args: list[str], tmp_path: Path,
                         capsys: pytest.CaptureFixture) -> None:
    src, opts, size = TASKS[name]
    opts = [str(files[o[1:]]) if o.startswith("@") else o for o in opts]
    out = tmp_path / f"{name}.png"
    assert _run(["restore", files[src], out, *opts, *model_args, "--float"]) == 0
    cap = capsys.readouterr()
    assert Image.open(out).size == size
    assert f"({size[0]}x{size[1]})" in cap.out
    rms = float(cap.out.split("rms ")[1].split()[0])
    x = torch.from_numpy(np.load(out.with_suffix(".npy")))
    assert torch.isfinite(x).all()
    if name.startswith(("inpaint", "colorize", "oldphoto", "sr-avgpool")):  # exact range–null split
        assert rms < 1e-5, cap.out
    if name == "inpaint-mask":  # known pixels are the observation's, holes are filled
        m = read_mask(files["mask"], (40, 56))
        y = read_image(files["small"])
        assert float((x - y).abs().masked_select(m.expand_as(x)).max()) < 1e-5
    if name == "deblur-tiny":  # 28x20 < one tile: the whole-image operator, no frequency cut: exact
        assert rms < 1e-5, cap.out
        assert "canvas 32x32" in cap.err


def test_untileable_operator_whole_image_fallback(model_kw: dict[str, object]) -> None:
    """An operator with no tile restriction works when one tile covers the image, else one clear line."""
    op = Compose([AvgPoolSR(2), Blur(gaussian_kernel(5, 0.5))], task="sr")  # no frequency cut: exact A⁺
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 3, 12, 14, generator=g)  # x 24x28 < tile 32
    res = restore(y, op=op, **model_kw)  # type: ignore[arg-type]
    assert res.x.shape == (1, 3, 24, 28) and res.info["consistency_rms"] < 1e-5
    with pytest.raises(UserError, match="cannot be cut into tiles.*use --tile >= 48"):
        restore(torch.rand(1, 3, 24, 20, generator=g), op=op, **model_kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ (c)
def test_degrade_restore_round_trip_inpaint(files: dict[str, Path], model_args: list[str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """degrade writes y + mask PNG + JSON; restore --params reads them back; known pixels are kept."""
    obs = tmp_path / "obs.png"
    assert _run(["degrade", files["small"], obs, "--task", "inpaint", "--mask-kind", "random",
                 "--rate", "0.6", "--seed", "3"]) == 0
    mask_png = tmp_path / "obs.operator.mask.png"
    assert mask_png.is_file() and (tmp_path / "obs.operator.json").is_file()
    hint = capsys.readouterr().out
    assert f"--params {tmp_path / 'obs.operator.json'}" in hint
    op = load_operator(tmp_path / "obs.operator.json")
    assert isinstance(op, Inpaint) and abs(op.known_fraction - 0.4) < 0.05
    out = tmp_path / "rest.png"
    assert _run(["restore", obs, out, "--task", "inpaint", "--params", tmp_path / "obs.operator.json",
                 "--float", *model_args]) == 0
    x = torch.from_numpy(np.load(tmp_path / "rest.npy"))
    y = read_image(obs)
    assert _rms(op.A(x) - op.A(y)) < 1e-5
    assert Image.open(out).size == (56, 40)
    # restoring with the wrong task for these parameters is a one-line error
    capsys.readouterr()
    assert _run(["restore", obs, tmp_path / "bad.png", "--task", "sr", "--params",
                 tmp_path / "obs.operator.json", *model_args]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "bad.png").exists()


ROUND_TRIPS = {  # name: (ground truth, degrade options)
    "sr": ("small", ["--task", "sr", "--scale", "2"]),
    "cs-block8": ("small", ["--task", "cs", "--cs-kind", "hadamard", "--block", "8", "--rate", "0.3"]),
    "cs-block32": ("mid", ["--task", "cs"]),  # default 32-px blocks = the tile: tiles must sit on blocks
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_degrade_restore_round_trip_float(name: str, files: dict[str, Path], model_args: list[str],
                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """SR (image y) and block-Hadamard CS (coefficient y, only as .npy) via the exact float observation."""
    src, opts = ROUND_TRIPS[name]
    task = opts[1]
    obs = tmp_path / "obs.png"
    assert _run(["degrade", files[src], obs, *opts, "--float"]) == 0
    y = torch.from_numpy(np.load(tmp_path / "obs.npy"))
    assert obs.is_file() == (task == "sr")  # a CS observation is not an image
    params = tmp_path / "obs.operator.json"
    out = tmp_path / "rest.png"
    assert _run(["restore", tmp_path / "obs.npy", out, "--task", task, "--params", params, "--float",
                 *model_args]) == 0
    x = torch.from_numpy(np.load(tmp_path / "rest.npy"))
    gt = read_image(files[src])
    assert x.shape == gt.shape
    assert _rms(load_operator(params).A(x) - y) < 1e-5
    if task == "cs":  # OUT.npy beside OUT.png must not overwrite the observation obs.npy
        before = sorted(tmp_path.iterdir())
        capsys.readouterr()
        assert _run(["restore", tmp_path / "obs.npy", obs, "--task", task, "--params", params, "--float",
                     *model_args]) == 2
        assert "overwrite the observation" in capsys.readouterr().err
        assert sorted(tmp_path.iterdir()) == before


# ------------------------------------------------------------------------------------------------ (d)
def _bad_checkpoint(kind: str, d: Path, refs_dir: Path) -> Path:
    if kind == "corrupt":
        p = d / "corrupt.safetensors"
        p.write_bytes((refs_dir / "nets" / "adm_small" / "weights.safetensors").read_bytes()[:1000])
    else:
        p = d / "pickled.pt"
        torch.save({"input_blocks.0.0.weight": Opaque()}, p)
    return p


ERRORS = {  # name: (input, extra args, what the line says)
    "unknown-task": ("small", ["--task", "dehaze"], "unknown task 'dehaze'"),
    "mask-size": ("small", ["--task", "inpaint", "--mask", "@mask_wrong"], "mask"),
    "unreadable-image": ("@text", ["--task", "sr"], "not an image"),
    "missing-model": ("small", ["--task", "sr", "--model", "@missing"], "not found"),
    "corrupt-checkpoint": ("small", ["--task", "sr", "--model", "@corrupt"], "corrupt"),
    "pickled-checkpoint": ("small", ["--task", "sr", "--model", "@pickled"], "pickled"),
    "bad-extension": ("small", ["--task", "sr", "--out", "out.txt"], "extension"),
    "cs-image": ("small", ["--task", "cs"], "compressed-sensing"),
    "kernel-too-big": ("small", ["--task", "deblur", "--kernel", "uniform", "--blur-size", "41"],
                       "too small"),
    "scale-vs-tile": ("small", ["--task", "sr", "--scale", "3"], "multiple of the alignment"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_exit_2_one_line_nothing_written(name: str, files: dict[str, Path], model_args: list[str],
                                                refs_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    src, extra, says = ERRORS[name]
    work = tmp_path / "work"
    work.mkdir()
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    subst = {"@text": text, "@mask_wrong": files["mask_wrong"], "@missing": tmp_path / "absent.safetensors"}
    if name in ("corrupt-checkpoint", "pickled-checkpoint"):
        subst["@" + name.split("-")[0]] = _bad_checkpoint(name.split("-")[0], tmp_path, refs_dir)
    out = work / "out.png"
    if "--out" in extra:
        i = extra.index("--out")
        out, extra = work / extra[i + 1], extra[:i] + extra[i + 2:]
    args = [subst.get(a, a) for a in extra]
    model = list(model_args)
    if "--model" in args:  # the case's own model replaces the stand-in's (keep --config)
        model = model[2:]
    source = subst[src] if src.startswith("@") else files[src]
    capsys.readouterr()
    assert _run(["restore", source, out, *args, *model, "--float"]) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and cap.err.startswith("diffrestore: error: "), cap.err
    assert says in cap.err, cap.err
    assert cap.out == ""
    assert list(work.iterdir()) == []  # no output, no .npy, no temp files


# ------------------------------------------------------------------------------------------------ (e)
def test_python_api(files: dict[str, Path], model_kw: dict[str, object]) -> None:
    """``diffrestore.restore`` (lazy top-level export) takes a tensor or a path and returns a result."""
    y = read_image(files["lr"])
    res = diffrestore.restore(y, "sr", scale=2, **model_kw)
    assert isinstance(res, RestoreResult)
    assert res.image.shape == (1, 3, 80, 112) and 0 <= float(res.image.min()) <= float(res.image.max()) <= 1
    assert res.info["consistency_rms"] < 1e-5 and res.info["network_calls"] > 0
    assert res.info["phases"][0]["tiles"] == 24 and res.info["seam_score"] is not None
    from_path = restore(files["lr"], task="sr", scale=2, **model_kw)  # type: ignore[arg-type]
    torch.testing.assert_close(from_path.x, res.x, atol=0, rtol=0)
    with pytest.raises(UserError, match="give a task"):
        restore(y, **model_kw)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="needs hierarchical"):
        restore(y, "sr", scale=2, hir_factor=2, **model_kw)  # type: ignore[arg-type]


def test_import_is_lazy() -> None:
    """``import diffrestore`` does not import torch; ``diffrestore.restore`` is there."""
    code = "import sys, diffrestore; assert callable(diffrestore.restore); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------ 2, 4
def test_batch_does_not_change_the_result(files: dict[str, Path], model_kw: dict[str, object]) -> None:
    """Per-tile noise streams: one tile per network call or eight give the same image (< 1e-5)."""
    y = read_image(files["lr"])
    one = restore(y, "sr", scale=2, batch=1, **model_kw)  # type: ignore[arg-type]
    eight = restore(y, "sr", scale=2, batch=8, **model_kw)  # type: ignore[arg-type]
    assert one.info["phases"][0]["network_calls"] > eight.info["phases"][0]["network_calls"]
    assert float((one.x - eight.x).abs().max()) < 1e-5


def test_hierarchical(files: dict[str, Path], model_kw: dict[str, object]) -> None:
    """HiR runs through the API: both phases announced, y still honoured exactly."""
    y = read_image(files["small"])
    plans: list[str] = []
    res = restore(y, "inpaint", kind="random", rate=0.5, hierarchical=True,
                  on_plan=lambda s: plans.append(s.phase), **model_kw)  # type: ignore[arg-type]
    assert plans == ["hir phase 1", "hir phase 2"]
    assert [p["phase"] for p in res.info["phases"]] == plans
    assert res.x.shape == (1, 3, 40, 56) and res.info["consistency_rms"] < 1e-5
    lr = read_image(files["lr"])
    sr = restore(lr, "sr", scale=2, hierarchical=True, hir_factor=2, **model_kw)  # type: ignore[arg-type]
    assert sr.x.shape == (1, 3, 80, 112) and sr.info["consistency_rms"] < 1e-5


def test_warm_start_skips_the_noisiest_steps(files: dict[str, Path], model_kw: dict[str, object]) -> None:
    """``start_t`` starts from A⁺y noised to t ≤ start: fewer network calls, still consistent with y."""
    y = read_image(files["lr"])
    kw = {**model_kw, "steps": 10}
    full = restore(y, "sr", scale=2, **kw)  # type: ignore[arg-type]
    warm = restore(y, "sr", scale=2, start_t=450, **kw)  # type: ignore[arg-type]
    # 10 steps are 900, 800, ..., 0: a start at 450 keeps 400..0, i.e. 5 of 10 calls per tile batch
    assert warm.info["network_calls"] * 2 == full.info["network_calls"]
    assert warm.info["consistency_rms"] < 1e-5
    assert not torch.equal(warm.x, full.x)
    from diffrestore.diffusion.schedules import ddnm_transitions

    assert [tr.t_from for tr in ddnm_transitions(10, start=50)] == [0]
    with pytest.raises(UserError, match="warm start"):
        ddnm_transitions(10, start=-5)
