"""Restore a folder of images: resumable, one bad file never stops it, sharded over torchrun ranks.

Why a manifest and not "skip if the output exists": an output says nothing about the input it came from or
the settings used; the manifest records the input's sha256, the settings and the status, so a rerun skips
exactly the inputs done with these settings, redoes changed inputs and retries failures. Outputs are written
atomically, so an interrupted run (``kill -9``) leaves either a complete output with its record or nothing
(a stale temporary file is removed when that output is written again).

Sharding: every rank lists the same inputs (sorted relative paths) and reads the manifest, then the ranks
hash their share of the inputs and exchange the hashes (the exchange is also the point after which anyone
may write), and rank ``r`` restores pending inputs ``r, r + world, ...``. An image's result does not depend
on the rank (per-tile noise streams, one seed), so outputs equal a one-process run.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffrestore.distributed import Launch
from diffrestore.errors import UserError
from diffrestore.io.atomic import file_sha256
from diffrestore.io.manifest import Manifest

__all__ = ["IMAGE_SUFFIXES", "BatchResult", "Item", "discover", "run_batch", "settings_id"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
OUT_SUFFIXES = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}
STATE_DIR = ".diffrestore-batch"
SUMMARY = "batch_summary.csv"


@dataclass(frozen=True)
class Item:
    """One input: ``rel`` (posix path relative to IN_DIR, the manifest key), its file and its output."""

    rel: str
    src: Path
    out: Path


@dataclass
class BatchResult:
    """What a run did (every rank sees the same totals; ``rows`` are filled on the lead rank)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    summary: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


def settings_id(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that change an output (same settings, same id)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def discover(in_dir: Path, out_dir: Path, *, recursive: bool = False, pattern: str | None = None,
             ext: str = "png") -> list[Item]:
    """The inputs in ``in_dir`` (sorted) and their outputs under ``out_dir`` (same relative folders).

    ``pattern`` is a glob on the file name (on the relative path if it contains ``/``); the default takes
    image files. Hidden files and folders, everything under ``out_dir`` and the output folders of other
    batches are left out (``out_dir`` may lie inside ``in_dir``: outputs are never read back as inputs).
    ``ext``: ``png``/``tif``/``jpg`` or ``same`` (the input's suffix). Refuses, before any work, layouts
    where an output could overwrite an input.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise UserError(f"input folder not found: {in_dir}")
    if ext != "same" and ext not in OUT_SUFFIXES:
        raise UserError(f"--ext {ext!r}: use png, tif, jpg or same")
    src_root, dst_root = in_dir.resolve(), out_dir.resolve()
    if src_root == dst_root:
        raise UserError(f"OUT_DIR is IN_DIR ({in_dir}): outputs would replace inputs; choose another OUT_DIR")
    if _inside(src_root, dst_root):
        raise UserError(f"IN_DIR {in_dir} lies inside OUT_DIR {out_dir}: outputs could replace inputs")
    items: list[Item] = []
    walker = os.walk(src_root) if recursive else [(str(src_root), [], os.listdir(src_root))]
    for root, dirs, names in walker:
        root_p = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (root_p / d / STATE_DIR).is_dir()
                         and not _inside((root_p / d).resolve(), dst_root))  # no batch's outputs
        for name in names:
            p = root_p / name
            if name.startswith(".") or not p.is_file() or _inside(p.resolve(), dst_root):
                continue
            rel = p.relative_to(src_root).as_posix()
            if pattern is not None:
                if not fnmatch.fnmatch(rel if "/" in pattern else name, pattern):
                    continue
            elif p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            suffix = p.suffix if ext == "same" else OUT_SUFFIXES[ext]
            out_rel = Path(rel).with_suffix(suffix if suffix.lower() in IMAGE_SUFFIXES else ".png")
            items.append(Item(rel, p, dst_root / out_rel))
    items.sort(key=lambda it: it.rel)
    outs: dict[Path, str] = {}
    for it in items:
        if it.out in outs:
            raise UserError(f"{outs[it.out]} and {it.rel} would both be written to {it.out}; use --ext same "
                            "or --pattern to keep one")
        outs[it.out] = it.rel
    return items


def _remove_stale_temp(out: Path) -> None:
    """Temporary files a killed writer of ``out`` left (``io.atomic`` names them ``.NAME.*.tmp``)."""
    if out.parent.is_dir():
        for stale in out.parent.glob(f".{out.name}.*.tmp"):
            stale.unlink(missing_ok=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, UserError) else f"{type(e).__name__}: {text}"


def run_batch(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    restore_one: Callable[[Path], torch.Tensor],
    settings: Mapping[str, Any],
    *,
    recursive: bool = False,
    pattern: str | None = None,
    ext: str = "png",
    launch: Launch | None = None,
    progress: Callable[[Any], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> BatchResult:
    """Restore every input of ``in_dir`` into ``out_dir``; ``restore_one(path)``: ``[1, C, H, W]`` in [0, 1].

    ``settings``: what determines an output (task, method, options); a done record counts only for the
    same settings and input bytes. ``launch``: this process's rank/world (``distributed.launched``);
    ``progress``: a ``progress.Event`` callback (images of this rank, with ETA); ``log``: one line per
    failed input (default: stderr). Returns the counts; the lead rank writes ``OUT_DIR/batch_summary.csv``.
    """
    from diffrestore.io.atomic import atomic_path
    from diffrestore.io.images import write_image
    from diffrestore.progress import Ticker

    launch = launch or Launch()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out_root = Path(out_dir)
    items = discover(Path(in_dir), out_root, recursive=recursive, pattern=pattern, ext=ext)
    if not items:
        raise UserError(f"no input images in {in_dir}" + (f" matching {pattern!r}" if pattern else "")
                        + ("" if recursive else " (add --recursive for subfolders)"))
    sid = settings_id(settings)
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_root / STATE_DIR, f"rank{launch.rank}")
    before = manifest.latest()  # read before the exchange below: no rank writes until all have read
    share = {i: file_sha256(it.src) for i, it in enumerate(items) if i % launch.world == launch.rank}
    sha: dict[int, str] = {}
    for part in launch.all_gather(share):
        sha.update(part)

    def is_done(rec: dict[str, Any] | None, i: int) -> bool:
        return (rec is not None and rec.get("status") == "done" and rec.get("sha256") == sha[i]
                and rec.get("settings_id") == sid and items[i].out.is_file())

    pending = [i for i, it in enumerate(items) if not is_done(before.get(it.rel), i)]
    mine = pending[launch.rank :: launch.world]
    ticker = Ticker(progress, "batch" if launch.world == 1 else f"batch rank {launch.rank}/{launch.world}",
                    len(mine), unit="image", warmup=1)
    ok = bad = 0
    for i in mine:
        it = items[i]
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"input": it.rel, "output": it.out.relative_to(out_root.resolve()).as_posix(),
                               "sha256": sha[i], "settings_id": sid, "settings": dict(settings),
                               "rank": launch.rank}
        try:
            image = restore_one(it.src)
            it.out.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temp(it.out)
            write_image(it.out, image)
        except Exception as e:  # one bad input is reported and skipped, never stops the batch
            bad += 1
            msg = _one_line(e)
            log(f"diffrestore: skipped {it.rel}: {msg}")
            manifest.append({**rec, "status": "failed", "error": msg,
                             "seconds": round(time.perf_counter() - t0, 3)})
        else:  # recorded only once the output is in place: a kill in between redoes this input
            ok += 1
            manifest.append({**rec, "status": "done", "seconds": round(time.perf_counter() - t0, 3)})
        ticker.tick(1, done=ok, failed=bad)
    launch.barrier()  # every rank finished: the manifest is complete
    result = BatchResult()
    after = manifest.latest()
    for i, it in enumerate(items):
        rec = after.get(it.rel)
        if i not in pending:
            status = "skipped"
            result.skipped += 1
        elif is_done(rec, i):
            status = "done"
            result.done += 1
        else:
            status = "failed"
            result.failed += 1
        rec = rec if rec is not None and rec.get("sha256") == sha[i] and rec.get("settings_id") == sid else {}
        error = "" if status != "failed" else rec.get("error", "no record: its process stopped")
        result.rows.append({"input": it.rel, "output": it.out.relative_to(out_root.resolve()).as_posix(),
                            "status": status, "seconds": rec.get("seconds", ""), "error": error,
                            "sha256": sha[i], "rank": rec.get("rank", "")})
    if launch.lead:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(result.rows[0]))
        w.writeheader()
        w.writerows(result.rows)
        result.summary = out_root / SUMMARY
        with atomic_path(result.summary) as tmp:
            tmp.write_text(buf.getvalue())
    launch.barrier()  # the summary exists when any rank returns
    return result
