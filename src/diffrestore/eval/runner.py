"""The evaluation loop: degrade each photo once with a fixed seed, restore it with every method, score it.

Why these rules:

* **One observation per (image, seed)**, derived from the protocol seed and the image *name* (not its
  position in the folder): every method sees exactly the same ``y``, a run with ``--limit 2`` sees the same
  observations as the full run, and adding photos to the folder changes nothing for the old ones.
* **Append each row to ``results.csv`` as soon as it is scored** (flushed and fsynced): a diffusion run on
  CPU can take hours; an interruption loses at most the image in flight, and ``--resume`` skips every
  (image, seed, method) that already has an ``ok`` row. Rows that failed are retried on resume.
* **Scores follow the published conventions** (``diffrestore.metrics``): RGB PSNR/SSIM on the whole image,
  Y PSNR/SSIM with a border of ``scale`` pixels cropped for SR (BasicSR), NIQE with the same crop,
  consistency ``‖A x − y‖`` (RMS, [0, 1] units) on the method's unclamped output, wall/CPU time and peak
  memory of the method call alone. LPIPS only with real backbone weights (``--lpips-weights``); FID
  never here (a set of 5–68 images cannot estimate it) — the report says so instead of substituting.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrestore.errors import UserError
from diffrestore.eval.methods import MethodOutput, MethodSpec, Problem, check_methods, get_method
from diffrestore.eval.protocol import Protocol

__all__ = [
    "FIELDS",
    "IMAGE_EXTS",
    "EvalRun",
    "image_seed",
    "list_images",
    "prepare_problem",
    "read_results",
    "run_eval",
    "score",
]

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

#: Columns of results.csv, in order. Metric cells are empty when not computed.
FIELDS: tuple[str, ...] = (
    "image",
    "seed",
    "method",
    "status",
    "height",
    "width",
    "psnr",
    "ssim",
    "psnr_y",
    "ssim_y",
    "consistency",
    "consistency_max",
    "niqe",
    "lpips",
    "seam_score",
    "wall_s",
    "cpu_s",
    "peak_rss_mb",
    "gpu_peak_mb",
    "network_calls",
    "model",
    "note",
)
NUMERIC = ("psnr", "ssim", "psnr_y", "ssim_y", "consistency", "consistency_max", "niqe", "lpips",
           "seam_score", "wall_s", "cpu_s", "peak_rss_mb", "gpu_peak_mb", "network_calls")

NIQE_BLOCK = 96  # NIQE's block size (BasicSR / MATLAB)


def niqe_possible(h: int, w: int) -> bool:
    """NIQE fits a covariance over 96x96 blocks: it needs at least two of them (one gives NaN)."""
    return (h // NIQE_BLOCK) * (w // NIQE_BLOCK) >= 2


# ---------------------------------------------------------------------- inputs
def list_images(data: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """Image files of a folder (not recursive), sorted by name; ``UserError`` if none."""
    d = Path(data)
    if not d.is_dir():
        hint = "" if d.is_absolute() else " (relative to the current directory; pass --data DIR)"
        raise UserError(f"data folder {d} does not exist{hint}")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {d}")
    return files[:limit] if limit else files


def image_seed(seed: int, name: str) -> int:
    """Per-image seed from (protocol seed, file name): stable across folders, limits and machines."""
    h = hashlib.sha256(f"diffrestore-eval/{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    h, w = min(size, H), min(size, W)
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def prepare_problem(protocol: Protocol, path: Path, seed: int, device: str = "cpu") -> Problem:
    """Ground truth → operator → observation for one (image, seed), deterministic in both.

    The ground truth is centre-cropped to ``protocol.crop`` (if set), then trimmed at the bottom/right to
    the largest size the operator accepts (BasicSR's ``mod crop`` for SR). Random operator parts (masks,
    CS indices) use the per-image seed unless the protocol fixes ``operator.seed``; the observation noise
    uses its own generator seeded from the same per-image seed.
    """
    from diffrestore.io.images import read_image
    from diffrestore.operators.factory import make_operator

    gt = read_image(path)
    if protocol.crop:
        gt = _center_crop(gt, protocol.crop)
    s = image_seed(seed, path.name)
    opts = dict(protocol.operator)
    opts.setdefault("seed", s)
    op = make_operator(protocol.task, tuple(gt.shape), **opts)
    fit = tuple(int(v) for v in op.fit_shape(tuple(gt.shape)))
    if fit[-2:] != tuple(gt.shape[-2:]):
        gt = gt[..., : fit[-2], : fit[-1]].contiguous()
        if min(gt.shape[-2:]) < 1:
            raise UserError(f"{path.name} is too small for this operator")
        op = make_operator(protocol.task, tuple(gt.shape), **opts)
    with torch.no_grad():
        y = op.A(gt).float()
    if protocol.noise > 0:
        g = torch.Generator().manual_seed(s ^ 0x5EED)
        y = y + (protocol.noise / 255.0) * torch.randn(y.shape, generator=g, dtype=torch.float32)
    if protocol.quantize_y and _is_image(y):
        y = torch.round(y.clamp(0, 1) * 255.0) / 255.0
    return Problem(name=path.name, gt=gt, y=y, op=op, task=protocol.task, task_opts=dict(protocol.operator),
                   noise=protocol.noise, seed=s, device=device)


def _is_image(y: torch.Tensor) -> bool:
    return y.dim() == 4 and y.shape[0] == 1 and y.shape[1] in (1, 3)


# ---------------------------------------------------------------------- scoring
def score(problem: Problem, out: MethodOutput, protocol: Protocol, lpips: Any = None) -> dict[str, Any]:
    """All quality metrics of one result (see the module docstring for the conventions)."""
    from diffrestore.metrics import consistency_stats, niqe, psnr, psnr_y, ssim, ssim_y

    x = out.image.detach().float().cpu()
    gt = problem.gt
    if tuple(x.shape) != tuple(gt.shape):
        raise ValueError(f"method returned shape {tuple(x.shape)}, ground truth is {tuple(gt.shape)}")
    xc = x.clamp(0, 1)
    crop = protocol.scale() if protocol.is_sr() else 0
    want = set(protocol.metrics)
    r: dict[str, Any] = {}
    if "psnr" in want:
        r["psnr"] = psnr(xc, gt)
    if "ssim" in want:
        r["ssim"] = ssim(xc, gt)
    small = min(gt.shape[-2:]) - 2 * crop
    if "psnr_y" in want and small > 0:
        r["psnr_y"] = psnr_y(xc, gt, crop_border=crop)
    if "ssim_y" in want and small >= 11:
        r["ssim_y"] = ssim_y(xc, gt, crop_border=crop)
    if "consistency" in want:
        st = consistency_stats(problem.op, x, problem.y)
        r["consistency"], r["consistency_max"] = st.rms, st.max_abs
    if "niqe" in want and niqe_possible(gt.shape[-2] - 2 * crop, gt.shape[-1] - 2 * crop):
        try:
            r["niqe"] = niqe(xc, crop_border=crop)
        except (ValueError, np.linalg.LinAlgError) as e:
            # a degenerate image (e.g. A⁺y with 80 % of pixels black) has no usable NSS statistics; the
            # other metrics of the row are still valid, so record the gap instead of failing the row
            r["note"] = f"NIQE failed ({type(e).__name__}: {str(e)[:80]})"
    if "lpips" in want and lpips is not None:
        r["lpips"] = float(lpips(xc, gt))
    return r


# ---------------------------------------------------------------------- results.csv
def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, ".8g")
    return str(v)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of results.csv with numbers parsed (empty → NaN); a torn last line is dropped."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != FIELDS:
            raise UserError(f"{path} has other columns than this version writes; use a new --out")
        rows = []
        for raw in reader:
            if raw.get("note") is None or raw.get("status") in (None, ""):
                continue  # interrupted mid-write
            row: dict[str, Any] = dict(raw)
            for k in NUMERIC:
                try:
                    row[k] = float(raw[k]) if raw[k] not in ("", None) else math.nan
                except ValueError:
                    row[k] = math.nan
            row["seed"] = int(raw["seed"])
            rows.append(row)
    return rows


class _CsvAppender:
    """Appends one row at a time, durable on return (flush + fsync), repairing a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            with path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                with path.open("a") as f:
                    f.write("\n")
        if fresh:
            self._write(dict(zip(FIELDS, FIELDS)))

    def _write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
            w.writerow({k: _fmt(row.get(k)) for k in FIELDS})
            f.flush()
            os.fsync(f.fileno())

    def append(self, row: dict[str, Any]) -> None:
        self._write(row)


# ---------------------------------------------------------------------- the run
@dataclass
class EvalRun:
    """What a run produced (paths) and the rows of results.csv after it."""

    out: Path
    rows: list[dict[str, Any]]
    computed: int = 0
    skipped_done: int = 0
    failed: int = 0
    not_applicable: list[tuple[str, str]] = field(default_factory=list)
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, Any] = field(default_factory=dict)


def _stem_key(path: Path, seed: int) -> str:
    return f"{path.stem}_s{seed}"


def _peak_gpu_reset(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gpu_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 1e6
    return math.nan


def _write_once(path: Path, img: torch.Tensor) -> None:
    from diffrestore.io.images import write_image

    if not path.exists():
        write_image(path, img.detach().float().cpu().clamp(0, 1))


def run_eval(
    protocol: Protocol,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = False,
    device: str = "cpu",
    lpips_weights: str | os.PathLike[str] | None = None,
    skip_unavailable: bool = False,
    command: dict[str, Any] | list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalRun:
    """Run ``protocol`` into the folder ``out`` and write the report (see the module docstring).

    Writes ``protocol.json``, ``results.csv`` (appended per row), ``inputs/`` (ground-truth crop,
    observation, A⁺y, operator parameters), ``images/<method>/`` and, at the end, the report files of
    :func:`diffrestore.eval.report.write_report`.
    """
    import json

    from diffrestore.eval.protocol import Protocol as _P
    from diffrestore.metrics import measure

    if protocol.data is None:
        raise UserError("no data folder: pass --data DIR or a protocol with 'data'")
    protocol = protocol.replace(data=str(Path(protocol.data).resolve()))
    missing_required = [m for m in protocol.requires if not get_method(m).implemented]
    if missing_required:
        raise UserError(f"protocol {protocol.name!r} requires {', '.join(missing_required)}, which "
                        f"diffrestore does not implement yet")
    methods, unavailable = check_methods(protocol.methods, skip_unavailable)
    if not methods:
        raise UserError("none of the requested methods can run")
    model_info: dict[str, dict[str, Any]] = {}
    for name in methods:
        spec = get_method(name)
        if spec.precheck is not None:
            model_info[name] = spec.precheck(protocol.options_for(name))
    images = list_images(protocol.data, protocol.limit)
    out = Path(out)
    csv_path = out / "results.csv"
    proto_path = out / "protocol.json"
    if csv_path.exists() and not resume:
        raise UserError(f"{out} already holds results.csv; pass --resume to continue it, or a new --out")
    if resume and proto_path.exists():
        try:
            old = _P.from_dict(json.loads(proto_path.read_text()), source=str(proto_path))
        except ValueError as e:
            raise UserError(f"cannot read {proto_path}: {e}") from None
        diff = old.resume_mismatch(protocol)
        if diff:
            raise UserError(f"cannot resume {out}: protocol differs in {', '.join(diff)}; use a new --out")
    # degrade the first image now: a bad operator option fails here, before anything is written
    prepare_problem(protocol, images[0], protocol.seeds[0], device)
    lpips = None
    if lpips_weights is not None and "lpips" in protocol.metrics:
        from diffrestore.eval.lpips import LPIPS

        lpips = LPIPS.from_file(lpips_weights)
    out.mkdir(parents=True, exist_ok=True)
    proto_path.write_text(json.dumps(protocol.to_dict(), indent=2) + "\n")

    done = {(r["image"], r["seed"], r["method"]) for r in read_results(csv_path) if r["status"] == "ok"}
    writer = _CsvAppender(csv_path)
    say = log or (lambda s: None)
    run = EvalRun(out=out, rows=[], unavailable=unavailable)
    items: list[dict[str, Any]] = []
    from diffrestore.progress import Ticker, tqdm_bar

    total = len(images) * len(protocol.seeds) * len(methods)
    listener = progress if callable(progress) else (tqdm_bar() if progress else None)
    ticker = Ticker(listener, "eval", total, unit="run")
    for path in images:
        for seed in protocol.seeds:
            key = _stem_key(path, seed)
            prob = prepare_problem(protocol, path, seed, device)
            inp = out / "inputs"
            inp.mkdir(exist_ok=True)
            _write_once(inp / f"{key}.gt.png", prob.gt)
            y_file = None
            if _is_image(prob.y):
                y_file = inp / f"{key}.y.png"
                _write_once(y_file, prob.y)
            with torch.no_grad():
                _write_once(inp / f"{key}.pinv.png", prob.op.pinv(prob.y).float())
            op_json = inp / f"{key}.operator.json"
            if not op_json.exists():
                prob.op.save_params(inp / key)
            item: dict[str, Any] = {
                "image": path.name, "seed": seed, "key": key, "image_seed": prob.seed,
                "gt": str(inp / f"{key}.gt.png"), "y": None if y_file is None else str(y_file),
                "y_shape": list(prob.y.shape), "pinv": str(inp / f"{key}.pinv.png"),
                "operator": prob.op.params(), "outputs": {},
            }
            for name in methods:
                spec = get_method(name)
                out_png = out / "images" / name / f"{key}.png"
                if (path.name, seed, name) in done:
                    run.skipped_done += 1
                    item["outputs"][name] = str(out_png)
                    ticker.tick(1, image=path.name, method=name)
                    continue
                why = spec.applies(prob)
                if why:
                    if (name, why) not in run.not_applicable:
                        run.not_applicable.append((name, why))
                        say(f"{name}: {why}; skipped")
                    ticker.tick(1, image=path.name, method=name)
                    continue
                row = _run_one(spec, prob, protocol, lpips, device, measure, say)
                row.update(image=path.name, seed=seed, method=name)
                if row["status"] == "ok":
                    out_png.parent.mkdir(parents=True, exist_ok=True)
                    from diffrestore.io.images import write_image

                    write_image(out_png, row.pop("_image").clamp(0, 1))
                    item["outputs"][name] = str(out_png)
                    run.computed += 1
                    if spec.uses_model:
                        model_info.setdefault(name, {}).setdefault("first_run", row.pop("_info", {}))
                else:
                    run.failed += 1
                row.pop("_image", None)
                row.pop("_info", None)
                writer.append(row)
                ticker.tick(1, image=path.name, method=name)
            items.append(item)
    run.rows = read_results(csv_path)
    from diffrestore.eval.report import write_report

    run.files = write_report(
        out, protocol, run.rows, items,
        methods=methods, not_applicable=run.not_applicable, unavailable=unavailable,
        model_info=model_info, lpips_weights=None if lpips_weights is None else str(lpips_weights),
        command=command, device=device,
    )
    return run


def _run_one(spec: MethodSpec, prob: Problem, protocol: Protocol, lpips: Any, device: str, measure: Any,
             say: Callable[[str], None]) -> dict[str, Any]:
    """Restore and score one (image, method); failures other than ``UserError`` become an ``error`` row.

    Why catch: one method crashing on one image (a numerical failure, out of memory) should not throw
    away hours of other results; the row records the error, the report lists it and ``--resume`` retries.
    ``UserError`` (a bad option, a missing model) would fail for every image, so it stops the run.
    """
    assert spec.run is not None
    opts = protocol.options_for(spec.name)
    _peak_gpu_reset(device)
    t0 = time.perf_counter()
    try:
        with measure(spec.name) as t:
            res = spec.run(prob, opts)
        gpu_mb = _peak_gpu_mb(device)
        metrics = score(prob, res, protocol, lpips)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - recorded in the row, see docstring
        msg = (str(e).splitlines() or [type(e).__name__])[0][:200]
        say(f"{prob.name} {spec.name}: FAILED {type(e).__name__}: {msg}")
        return {"status": "error", "note": f"{type(e).__name__}: {msg}", "wall_s": time.perf_counter() - t0,
                "height": prob.gt.shape[-2], "width": prob.gt.shape[-1]}
    info = res.info or {}
    row: dict[str, Any] = {
        "status": "ok",
        "height": prob.gt.shape[-2],
        "width": prob.gt.shape[-1],
        **metrics,
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
        "peak_rss_mb": t.peak_rss_bytes / 1e6,
        "gpu_peak_mb": gpu_mb,
        "network_calls": info.get("network_calls", 0 if not spec.uses_model else None),
        "seam_score": info.get("seam_score"),  # tiled methods only: joins vs interior (~1 = invisible)
        "model": info.get("model", ""),
        "note": "; ".join(n for n in (metrics.pop("note", ""), "peak RSS is the process lifetime peak"
                                      if t.peak_is_lifetime else "") if n),
        "_image": res.image.detach().float().cpu(),
        "_info": {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, type(None)))},
    }
    say(_row_line(prob.name, spec.name, row))
    return row


def _row_line(image: str, method: str, row: dict[str, Any]) -> str:
    parts = [f"{image} {method}:"]
    for k, lab, f in (("psnr", "PSNR", ".2f"), ("psnr_y", "PSNR-Y", ".2f"), ("ssim", "SSIM", ".4f"),
                      ("consistency", "|Ax-y|", ".2e"), ("wall_s", "s", ".2f")):
        v = row.get(k)
        if isinstance(v, (int, float)) and not math.isnan(v):
            parts.append(f"{lab} {format(v, f)}")
    return " ".join(parts)
