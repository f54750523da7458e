"""Report files of an evaluation: ``summary.md``, ``report.json``, image grids and plots.

Why each: ``summary.md`` is the table people paste into a paper or an issue (mean ± std per method, best
in bold, conventions stated under it, so nobody compares a Y-PSNR with an RGB one); ``report.json`` is the
provenance a reviewer needs to rerun it (versions, seeds, models, operator parameters, machine); grids
show what numbers cannot (GT | y | A⁺y | each method, with a zoomed crop where the GT has most detail);
the plots show the speed/quality trade-off and whether a method wins on every image or only on average.

Everything is rebuilt from ``results.csv`` and the saved images, so a resumed run reports all its rows.
Matplotlib runs with the Agg backend (no display needed).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffrestore.eval.protocol import Protocol

__all__ = ["COLUMNS", "best_flags", "summarize", "write_report"]

#: (csv key, header, format, higher is better; None = no "best": the seam score is ideal at ~1, not extreme)
COLUMNS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("psnr", "PSNR ↑", ".2f", True),
    ("ssim", "SSIM ↑", ".4f", True),
    ("psnr_y", "PSNR-Y ↑", ".2f", True),
    ("ssim_y", "SSIM-Y ↑", ".4f", True),
    ("consistency", "‖Ax−y‖ ↓", ".2e", False),
    ("niqe", "NIQE ↓", ".2f", False),
    ("lpips", "LPIPS ↓", ".4f", False),
    ("seam_score", "seam (≈1)", ".3f", None),
    ("wall_s", "time (s) ↓", ".2f", False),
    ("peak_rss_mb", "peak RSS (MB) ↓", ".0f", False),
)
NOT_COMPUTED_LPIPS = "not computed (no local backbone weights; pass --lpips-weights PATH)"
NOT_COMPUTED_FID = "not computed (no local backbone weights; a set this small cannot estimate FID anyway)"


def _label(method: str) -> str:
    from diffrestore.eval.methods import METHODS

    spec = METHODS.get(method)
    return spec.label if spec else method


def _latest_ok(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last ``ok`` row per (image, seed, method): a retried failure replaces nothing it should not."""
    keep: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in rows:
        if r.get("status") == "ok":
            keep[(r["image"], r["seed"], r["method"])] = r
    return list(keep.values())


def _order(methods: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    for r in rows:
        if r["method"] not in seen:
            seen.append(r["method"])
    present = {r["method"] for r in rows}
    return [m for m in seen if m in present]


def summarize(rows: Sequence[dict[str, Any]], methods: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """method → {n, metric → {mean, std, n}} over the ``ok`` rows (std: sample std, ddof = 1; 0 for n = 1)."""
    ok = _latest_ok(rows)
    out: dict[str, dict[str, Any]] = {}
    for m in _order(methods, ok):
        mr = [r for r in ok if r["method"] == m]
        d: dict[str, Any] = {"n": len(mr)}
        for key, *_ in (*COLUMNS, ("cpu_s", "", "", False), ("network_calls", "", "", False),
                        ("consistency_max", "", "", False), ("gpu_peak_mb", "", "", False)):
            v = np.array([r[key] for r in mr], dtype=np.float64)
            v = v[~np.isnan(v)]
            if v.size:
                finite = v[np.isfinite(v)]
                std = float(np.std(v, ddof=1)) if v.size > 1 and finite.size == v.size else 0.0
                d[key] = {"mean": float(np.mean(v)), "std": std, "n": int(v.size)}
        out[m] = d
    return out


def best_flags(summary: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """column → methods whose mean is best once formatted as printed (ties all bold)."""
    flags: dict[str, set[str]] = {}
    for key, _, fmt, higher in COLUMNS:
        if higher is None:
            continue
        vals = {m: s[key]["mean"] for m, s in summary.items() if key in s and not math.isnan(s[key]["mean"])}
        if not vals:
            continue
        best = max(vals.values()) if higher else min(vals.values())
        flags[key] = {m for m, v in vals.items() if format(v, fmt) == format(best, fmt)}
    return flags


def _primary(protocol: Protocol) -> tuple[str, str]:
    """The PSNR the plots use: Y with border crop for SR (the SR tables' convention), RGB otherwise."""
    return ("psnr_y", "PSNR-Y (dB)") if protocol.is_sr() else ("psnr", "PSNR (dB)")


# ---------------------------------------------------------------------- summary.md
def _task_line(protocol: Protocol) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in protocol.operator.items())
    s = f"`{protocol.task}`" + (f" ({opts})" if opts else "")
    if protocol.noise:
        s += f", noise σ = {protocol.noise:g}/255"
    if protocol.crop:
        s += f", centre crop {protocol.crop}"
    return s


def _summary_md(protocol: Protocol, rows: list[dict[str, Any]], summary: dict[str, dict[str, Any]],
                methods: list[str], notes: list[str], n_images: int) -> str:
    flags = best_flags(summary)
    cols = [c for c in COLUMNS if any(c[0] in s for s in summary.values())]
    if not summary:
        head = [f"# Evaluation — {protocol.name}", "", "No successful results yet.", "", "## Notes", ""]
        return "\n".join(head + [f"- {n}" for n in notes] + [""])
    lines = [
        f"# Evaluation — {protocol.name}",
        "",
        f"- data: `{protocol.data}` ({n_images} image(s)), seeds {protocol.seeds}",
        f"- task: {_task_line(protocol)}",
        f"- methods: {', '.join(_label(m) for m in methods)}",
        "",
        "| Method | n | " + " | ".join(c[1] for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for m, s in summary.items():
        cells = []
        for key, _, fmt, _ in cols:
            if key not in s:
                cells.append("—")
                continue
            txt = f"{format(s[key]['mean'], fmt)} ± {format(s[key]['std'], fmt)}"
            cells.append(f"**{txt}**" if m in flags.get(key, set()) else txt)
        lines.append(f"| {_label(m)} | {s['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample standard deviation over images (and seeds); best mean per column in bold.",
              ""]
    key, name = _primary(protocol)
    ok = _latest_ok(rows)
    if ok and summary:
        ms = list(summary)
        head = "| Image | seed | " + " | ".join(_label(m) for m in ms) + " |"
        lines += [f"## Per image — {name}", "", head, "|---|---:|" + "---:|" * len(ms)]
        table: dict[tuple[str, int], dict[str, float]] = {}
        for r in ok:
            table.setdefault((r["image"], r["seed"]), {})[r["method"]] = r[key]
        for (img, seed), vals in sorted(table.items()):
            finite = {m: v for m, v in vals.items() if not math.isnan(v)}
            best = max(finite.values()) if finite else None
            cells = []
            for m in ms:
                v = vals.get(m, math.nan)
                txt = "—" if math.isnan(v) else f"{v:.2f}"
                is_best = best is not None and not math.isnan(v) and f"{v:.2f}" == f"{best:.2f}"
                cells.append(f"**{txt}**" if is_best else txt)
            lines.append(f"| {img} | {seed} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _notes(protocol: Protocol, summary: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
           not_applicable: Sequence[tuple[str, str]], unavailable: Sequence[tuple[str, str]],
           lpips_weights: str | None) -> list[str]:
    crop = protocol.scale() if protocol.is_sr() else 0
    n = [
        "PSNR/SSIM on RGB over the whole image; PSNR-Y/SSIM-Y on BT.601 Y (16–235)"
        + (f" with a border of {crop} px cropped (BasicSR convention)" if crop else "")
        + "; all on 8-bit quantised images (diffrestore.metrics).",
        "‖Ax−y‖: RMS of A x − y in [0, 1] units on the method's unclamped output"
        + (" (noisy y: expect about the noise level)" if protocol.noise else "") + ".",
        "seam: pixel differences across tile joins relative to those elsewhere "
        "(diffrestore.metrics.seam_score; ~1 = invisible joins, > 1 = visible seams); tiled methods only.",
        "time: wall seconds of the method call alone (model loading included for diffusion methods); "
        "peak RSS: the process's peak resident memory during that call.",
    ]
    if not any("niqe" in s for s in summary.values()) and "niqe" in protocol.metrics:
        n.append("NIQE: not computed (needs at least two 96x96 blocks after the border crop, e.g. 192x96).")
    elif "niqe" in protocol.metrics:
        n.append("NIQE: BasicSR/MATLAB NIQE with the published pristine parameters (lower is better).")
    if lpips_weights is None or "lpips" not in protocol.metrics:
        n.append(f"LPIPS: {NOT_COMPUTED_LPIPS}.")
    else:
        n.append(f"LPIPS: computed with the backbone + linear weights in `{lpips_weights}`.")
    n.append(f"FID: {NOT_COMPUTED_FID}.")
    for m, why in not_applicable:
        n.append(f"{_label(m)}: {why}.")
    for m, why in unavailable:
        n.append(f"{_label(m)}: skipped — {why}.")
    failed = [r for r in rows if r.get("status") == "error"]
    ok_keys = {(r["image"], r["seed"], r["method"]) for r in rows if r.get("status") == "ok"}
    still = [r for r in failed if (r["image"], r["seed"], r["method"]) not in ok_keys]
    for r in still:
        n.append(f"FAILED {r['image']} (seed {r['seed']}) {r['method']}: {r['note']} (rerun with --resume).")
    if protocol.notes:
        n.append(protocol.notes)
    return n


# ---------------------------------------------------------------------- report.json
def _versions() -> dict[str, Any]:
    from importlib import metadata

    import diffrestore

    v: dict[str, Any] = {"diffrestore": diffrestore.__version__, "python": platform.python_version()}
    for pkg in ("torch", "numpy", "scipy", "pillow", "matplotlib", "scikit-image", "bm3d", "tqdm"):
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    try:
        here = Path(diffrestore.__file__).resolve().parent
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            v["git_commit"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def _machine(device: str) -> dict[str, Any]:
    import torch

    m: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        m["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                m["memory_gb"] = round(int(line.split()[1]) * 1024 / 1e9, 1)
                break
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return m


# ---------------------------------------------------------------------- grids
def _font(size: int) -> Any:
    """DejaVu Sans (shipped with matplotlib, has ⁺ and Greek) so labels like A⁺y render everywhere."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (OSError, ImportError, ValueError):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # older Pillow: fixed bitmap font
            return ImageFont.load_default()


def _detail_box(gt: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side``² window with the most gradient energy: where methods differ most visibly."""
    g = gt.mean(axis=2)
    e = np.zeros_like(g)
    e[:, 1:] += np.abs(np.diff(g, axis=1))
    e[1:, :] += np.abs(np.diff(g, axis=0))
    H, W = g.shape
    ii = np.pad(e.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, pos = -1.0, (0, 0)
    step = max(1, side // 4)
    for t in list(range(0, H - side + 1, step)) + [H - side]:
        for left in list(range(0, W - side + 1, step)) + [W - side]:
            s = ii[t + side, left + side] - ii[t, left + side] - ii[t + side, left] + ii[t, left]
            if s > best:
                best, pos = s, (t, left)
    return pos


def _grid(item: dict[str, Any], methods: list[str], metrics: dict[str, dict[str, float]], key: str,
          keyname: str, path: Path) -> Path:
    """One grid PNG: row 1 full images (GT | y | A⁺y | methods), row 2 the zoomed detail crop."""
    from PIL import Image, ImageDraw

    gt = Image.open(item["gt"]).convert("RGB")
    W, H = gt.size
    f = min(320 / W, 320 / H)
    f = max(f, 160 / max(W, H))
    cw, ch = max(1, round(W * f)), max(1, round(H * f))
    zs = cw  # zoom cells are square, one column wide
    side = max(4, min(W, H) // 4)
    top, left = _detail_box(np.asarray(gt, dtype=np.float64) / 255.0, side)

    cols: list[tuple[str, str, Image.Image | None]] = [("GT", "", gt)]
    y_img = Image.open(item["y"]).convert("RGB") if item.get("y") else None
    cols.append(("y", "" if y_img else f"compact {item.get('y_shape')}", y_img))
    pinv_val = metrics.get("pinv", {}).get(key)
    cols.append(("A⁺y", "" if pinv_val is None else f"{keyname} {pinv_val:.2f}",
                 Image.open(item["pinv"]).convert("RGB")))
    for m in methods:
        if m == "pinv" or m not in item["outputs"] or not Path(item["outputs"][m]).exists():
            continue
        v = metrics.get(m, {}).get(key)
        cols.append((_label(m), "" if v is None else f"{keyname} {v:.2f}",
                     Image.open(item["outputs"][m]).convert("RGB")))

    head, pad = 36, 4
    canvas = Image.new("RGB", (len(cols) * (cw + pad) + pad, head + ch + pad + zs + pad), "white")
    draw = ImageDraw.Draw(canvas)
    f1, f2 = _font(14), _font(11)
    for i, (lab, sub, img) in enumerate(cols):
        x0 = pad + i * (cw + pad)
        draw.text((x0 + 2, 2), lab, fill="black", font=f1)
        if sub:
            draw.text((x0 + 2, 19), sub, fill=(60, 60, 60), font=f2)
        if img is None:
            draw.rectangle([x0, head, x0 + cw - 1, head + ch - 1], fill=(200, 200, 200))
            draw.text((x0 + 6, head + ch // 2 - 6), "y is not an image", fill="black", font=f2)
            continue
        sx, sy = img.size[0] / W, img.size[1] / H  # y may be smaller (SR)
        resample = Image.Resampling.NEAREST if img.size[0] < W else Image.Resampling.LANCZOS
        canvas.paste(img.resize((cw, ch), resample), (x0, head))
        box = (round(left * sx), round(top * sy), round((left + side) * sx), round((top + side) * sy))
        crop = img.crop(box).resize((zs, zs), Image.Resampling.NEAREST)
        canvas.paste(crop, (x0, head + ch + pad))
        if i == 0:
            draw.rectangle([x0 + round(left * f), head + round(top * f), x0 + round((left + side) * f) - 1,
                            head + round((top + side) * f) - 1], outline=(255, 0, 0), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- plots
def _plots(out: Path, protocol: Protocol, rows: list[dict[str, Any]], summary: dict[str, dict[str, Any]]
           ) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    key, name = _primary(protocol)
    files: dict[str, str] = {}
    plots = out / "plots"
    plots.mkdir(exist_ok=True)

    def save(fig: Any, ax: Any, stem: str) -> None:
        """Grid, tight layout, ``plots/<stem>.png``, close; the file goes into ``files[stem]``."""
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        p = plots / f"{stem}.png"
        fig.savefig(p)
        plt.close(fig)
        files[stem] = str(p)

    # 1. quality vs time per method
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    times = [s["wall_s"]["mean"] for s in summary.values() if "wall_s" in s and s["wall_s"]["mean"] > 0]
    log_x = bool(times) and max(times) / max(min(times), 1e-9) > 20
    for m, s in summary.items():
        if key not in s or "wall_s" not in s:
            continue
        xerr = None if log_x else s["wall_s"]["std"]  # a ± std bar is meaningless on a log axis
        ax.errorbar(s["wall_s"]["mean"], s[key]["mean"], xerr=xerr, yerr=s[key]["std"],
                    fmt="o", capsize=3, label=_label(m))
        ax.annotate(_label(m), (s["wall_s"]["mean"], s[key]["mean"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=9)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("time per image (s, wall)")
    ax.set_ylabel(name)
    ax.set_title(f"{protocol.name}: {name} vs time")
    save(fig, ax, "psnr_vs_time")

    # 2. per-image scatter against the classical reference
    ok = _latest_ok(rows)
    ref = "bicubic" if any(r["method"] == "bicubic" for r in ok) else "pinv"
    refv = {(r["image"], r["seed"]): r[key] for r in ok if r["method"] == ref}
    fig, ax = plt.subplots(figsize=(5.2, 5.2), dpi=110)
    lo, hi = math.inf, -math.inf
    n_series = 0
    for m in summary:
        if m == ref:
            continue
        pts = [(refv[(r["image"], r["seed"])], r[key]) for r in ok
               if r["method"] == m and (r["image"], r["seed"]) in refv]
        pts = [(a, b) for a, b in pts if np.isfinite(a) and np.isfinite(b)]
        if not pts:
            continue
        a = np.array(pts)
        ax.scatter(a[:, 0], a[:, 1], label=_label(m), s=22)
        lo, hi = min(lo, a.min()), max(hi, a.max())
        n_series += 1
    if n_series:
        ax.plot([lo - 0.5, hi + 0.5], [lo - 0.5, hi + 0.5], "k--", lw=0.8, label="equal")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, f"no method to compare with {_label(ref)}", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(f"{_label(ref)} {name}")
    ax.set_ylabel(f"method {name}")
    ax.set_title(f"per image: methods vs {_label(ref)} (above the line = better)", fontsize=9)
    save(fig, ax, "psnr_scatter")
    return files


# ---------------------------------------------------------------------- entry point
def write_report(
    out: Path,
    protocol: Protocol,
    rows: list[dict[str, Any]],
    items: list[dict[str, Any]],
    *,
    methods: list[str],
    not_applicable: Sequence[tuple[str, str]] = (),
    unavailable: Sequence[tuple[str, str]] = (),
    model_info: dict[str, dict[str, Any]] | None = None,
    lpips_weights: str | None = None,
    command: dict[str, Any] | list[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write summary.md, report.json, grids/*.png and plots/*.png into ``out``; returns their paths."""
    summary = summarize(rows, methods)
    notes = _notes(protocol, summary, rows, not_applicable, unavailable, lpips_weights)
    n_images = len({r["image"] for r in rows}) or len(items)
    files: dict[str, Any] = {"results": str(out / "results.csv"), "summary": str(out / "summary.md"),
                             "report": str(out / "report.json")}
    md = _summary_md(protocol, rows, summary, list(summary) or methods, notes, n_images)
    _atomic_text(out / "summary.md", md)

    key, keyname = _primary(protocol)
    per: dict[str, dict[str, dict[str, float]]] = {}
    for r in _latest_ok(rows):
        if not math.isnan(r[key]):
            per.setdefault(f"{r['image']}|{r['seed']}", {}).setdefault(r["method"], {})[key] = r[key]
    grids = []
    for it in items[: max(0, protocol.grids)]:
        mets = per.get(f"{it['image']}|{it['seed']}", {})
        grids.append(str(_grid(it, list(summary) or methods, mets, key, keyname.split(" ")[0],
                               out / "grids" / f"{it['key']}.png")))
    files["grids"] = grids
    files["plots"] = _plots(out, protocol, rows, summary)

    models: dict[str, Any] = {}
    for m in methods:
        from diffrestore.eval.methods import METHODS

        spec = METHODS.get(m)
        if spec and spec.uses_model:
            in_rows = sorted({r["model"] for r in rows if r["method"] == m and r["model"]})
            models[m] = {"options": protocol.options_for(m), "run": (model_info or {}).get(m, {}),
                         "models_in_rows": in_rows}
    doc = {
        "format": "diffrestore.eval/1",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "protocol": protocol.to_dict(),
        "versions": _versions(),
        "machine": _machine(device),
        "seeds": {"protocol": protocol.seeds,
                  "images": {it["key"]: it["image_seed"] for it in items},
                  "rule": "image seed = first 31 bits of sha256('diffrestore-eval/<seed>/<file name>')"},
        "models": {"used": models, "documented": protocol.models},
        "operator": {it["key"]: it["operator"] for it in items},
        "methods": {m: {"label": _label(m), "options": protocol.options_for(m)} for m in methods},
        "not_applicable": [{"method": m, "why": w} for m, w in not_applicable],
        "unavailable": [{"method": m, "why": w} for m, w in unavailable],
        "metrics": {
            "conventions": notes[:4],
            "lpips": NOT_COMPUTED_LPIPS if lpips_weights is None else f"computed ({lpips_weights})",
            "fid": NOT_COMPUTED_FID,
        },
        "summary": summary,
        "rows": {"ok": len(_latest_ok(rows)), "failed": sum(1 for r in rows if r.get("status") == "error")},
        "files": files,
    }
    _atomic_text(out / "report.json", json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    return files


def _jsonable(v: Any) -> Any:
    """NaN/inf are not JSON: write them as null / "inf" so every reader can load the report."""
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
