"""Image retrieval index for ADIR's nearest-neighbour adaptation set (METHODS §5): embed a folder once,
query it with a (degraded) image by spherical distance ``d(u, v) = arccos(<u, v> / |u||v|)``.

Why this shape:

* **No download by default.** ADIR uses CLIP-like vision–language encoders; we ship none, so the default
  embedding is the diffusion prior itself: mean-pooled middle-block activations of the UNet for the image
  (resized so its short side is ``size`` and centre-cropped), at a fixed noise level t, averaged over a
  few FIXED noise draws. Noising to t drowns exactly the fine detail that blur / downsampling / noise
  remove, so a degraded photo and its clean version land close together (``bench/bench_retrieval.py``
  measures it). Fixed draws make the embedding a deterministic function of the image.
* **Pluggable, without pickle.** ``embed`` may be ``"prior"`` / ``"prior:MODEL"`` (any registry name or
  ``.safetensors`` checkpoint + config the registry can load; weights only) or ``"python:module:function"``
  — the user's OWN importable code taking ``[B, 3, H, W]`` in [0, 1] and returning ``[B, D]``; choosing a
  Python plugin is an explicit opt-in to run that code, unlike TorchScript / pickled models, whose files
  run code (or unpickle objects) merely by being loaded.
* **Incremental and atomic.** An index is one ``.safetensors`` file (``embeddings [N, D]`` + a JSON header
  with the embedder spec and per-file path/size/mtime/sha256). Rebuilding re-embeds only new files and files
  whose size/mtime changed AND whose content hash changed; files that disappeared are dropped; a different
  embedder spec re-embeds everything. The file is replaced atomically, so a crash never leaves a broken index.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffrestore.errors import UserError
from diffrestore.io.atomic import file_sha256

__all__ = [
    "DEFAULT_EMBED",
    "Index",
    "PriorEmbedder",
    "build_index",
    "embed_images",
    "get_embedder",
    "load_index",
    "query",
    "spherical_distance",
]

FORMAT_VERSION = 1
META_KEY = "diffrestore_index"
DEFAULT_EMBED = "prior"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

Embedder = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------ embedders


class PriorEmbedder:
    """Diffusion-feature embedding: mean-pooled middle-block activations of an ADM UNet at timestep ``t``,
    averaged over ``draws`` fixed noise draws (seed ``seed``), for the image resized to short side ``size``
    and centre-cropped to ``size x size`` (default: the net's native patch; on BSDS500 the 64 px view beat a
    128 px one at lower cost, see ``bench/bench_retrieval.py``).

    Pure function of the image: inputs ``[B, 3, H, W]`` in [0, 1] (any H, W), output ``[B, D]`` float32.
    Uses the network read-only under ``no_grad`` (safe with the registry's cached model).
    """

    def __init__(self, denoiser: Any, *, size: int | None = None, t: int = 400, draws: int = 4,
                 seed: int = 0, name: str = DEFAULT_EMBED) -> None:
        net = denoiser.net
        if not all(hasattr(net, a) for a in ("input_blocks", "middle_block", "_embed")):
            raise UserError(f"embedding {name!r}: the model is not an ADM UNet (no middle block)")
        self.den = denoiser
        self.size = int(size or int(getattr(net, "image_size", 64)))
        self.t, self.draws, self.seed, self.name = int(t), int(draws), int(seed), name

    @property
    def spec(self) -> str:
        """Identity of the embedding (stored in the index; a change re-embeds everything)."""
        return f"{self.name}|size={self.size}|t={self.t}|draws={self.draws}|seed={self.seed}"

    def _prepare(self, x01: torch.Tensor) -> torch.Tensor:
        s = self.size
        h, w = x01.shape[-2:]
        r = s / min(h, w)
        size = (max(s, round(h * r)), max(s, round(w * r)))
        x = F.interpolate(x01.float(), size=size, mode="bilinear", antialias=r < 1, align_corners=False)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        return x[..., top:top + s, left:left + s] * 2 - 1

    @torch.no_grad()
    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        net = self.den.net
        p = next(net.parameters())
        x = self._prepare(x01).to(p.device)
        b = x.shape[0]
        g = torch.Generator().manual_seed(self.seed)
        z = torch.randn((self.draws, 1, *x.shape[1:]), generator=g).to(x)  # same draws for every image
        ab = self.den.abar(self.t).item()
        xt = (math.sqrt(ab) * x[None] + math.sqrt(1 - ab) * z).reshape(-1, *x.shape[1:])
        t = torch.full((xt.shape[0],), float(self.t), device=x.device)
        emb = net._embed(t, xt)
        h = xt.to(p.dtype)
        for m in net.input_blocks:
            h = m(h, emb)
        h = net.middle_block(h, emb)
        f = h.float().mean(dim=(2, 3)).reshape(self.draws, b, -1).mean(0)
        return f


class _PythonEmbedder:
    def __init__(self, target: str) -> None:
        mod, _, fn = target.partition(":")
        if not mod or not fn:
            raise UserError(f"python embedding must be 'python:module:function', got 'python:{target}'")
        try:
            self.fn = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot import embedding function {target}: {e}") from None
        self.spec = f"python:{target}"

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = torch.as_tensor(self.fn(x01)).float()
        if out.dim() != 2 or out.shape[0] != x01.shape[0]:
            raise UserError(f"embedding {self.spec} returned shape {tuple(out.shape)}, expected [B, D]")
        return out


@functools.lru_cache(maxsize=4)
def _cached_embedder(spec: str) -> Any:
    if spec.startswith("python:"):
        return _PythonEmbedder(spec[len("python:"):])
    base, *opts = spec.split("|")
    name, _, model = base.partition(":")
    if name != "prior":
        raise UserError(f"unknown embedding {spec!r}: use 'prior', 'prior:MODEL' or 'python:module:function'")
    kw: dict[str, int] = {}
    for o in opts:
        k, _, v = o.partition("=")
        if k not in ("size", "t", "draws", "seed") or not v.lstrip("-").isdigit():
            raise UserError(f"bad option {o!r} in embedding {spec!r} (size=, t=, draws=, seed= integers)")
        kw[k] = int(v)
    from diffrestore.api import load_denoiser

    den, _ = load_denoiser(model or None)
    return PriorEmbedder(den, name=base, **kw)


def get_embedder(embed: str | Any | None = None) -> Any:
    """An embedder from a spec string (see module doc) or an object with ``spec`` and ``__call__``."""
    if embed is None:
        embed = DEFAULT_EMBED
    if isinstance(embed, str):
        return _cached_embedder(embed)
    if not callable(embed):
        raise UserError("embed must be a spec string or a callable with a .spec attribute")
    return embed


def _spec_of(emb: Any) -> str:
    return str(getattr(emb, "spec", None) or getattr(emb, "__qualname__", None) or type(emb).__name__)


# --------------------------------------------------------------------------------------------------- index


@dataclass
class Index:
    """Embeddings ``[N, D]`` of the files ``entries[i]["path"]`` (relative to ``root``)."""

    root: Path
    embed: str
    entries: list[dict[str, Any]]
    embeddings: torch.Tensor
    stats: dict[str, int] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [self.root / e["path"] for e in self.entries]


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images (jpg/png/...) found in {folder}")
    return files


def load_index(path: str | Path) -> Index:
    """Read an index file (``UserError`` if it is not one)."""
    from safetensors import safe_open

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"index file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            emb = f.get_tensor("embeddings") if "embeddings" in f.keys() else None
    except Exception as e:  # safetensors' own error types
        raise UserError(f"{p} is not a safetensors index: {e}") from None
    if META_KEY not in meta or emb is None:
        raise UserError(f"{p} is not a diffrestore image index")
    info = json.loads(meta[META_KEY])
    return Index(Path(info["root"]), info["embed"], list(info["entries"]), emb.float())


def _save(index: Index, out: Path) -> None:
    from safetensors.torch import save_file

    from diffrestore.io.atomic import atomic_path

    info = {"format": FORMAT_VERSION, "root": str(index.root), "embed": index.embed, "entries": index.entries}
    with atomic_path(out) as tmp:
        save_file({"embeddings": index.embeddings.contiguous()}, str(tmp),
                  metadata={META_KEY: json.dumps(info)})


def build_index(
    folder: str | Path,
    out: str | Path,
    embed: str | Any | None = None,
    *,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> Index:
    """Embed every image under ``folder`` (recursive) into the index file ``out``, reusing the entries of
    an existing ``out`` for unchanged files; returns the index with ``stats`` = embedded / reused /
    removed counts. ``progress(done, todo)`` after each embedded file."""
    from diffrestore.io.images import read_image

    root = Path(folder).expanduser().resolve()
    out = Path(out).expanduser()
    emb_fn = get_embedder(embed)
    spec = _spec_of(emb_fn)
    old: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    if out.is_file():
        prev = load_index(out)
        if prev.embed == spec and prev.root == root:
            old = {e["path"]: (e, prev.embeddings[i]) for i, e in enumerate(prev.entries)}
    files = _list_images(root)
    entries: list[dict[str, Any]] = []
    vecs: list[torch.Tensor | None] = []
    todo: list[int] = []
    reused = 0
    for f in files:
        rel = f.relative_to(root).as_posix()
        st = f.stat()
        e = {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        prev_e = old.get(rel)
        if prev_e is not None and (prev_e[0]["size"], prev_e[0]["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            e["sha256"] = prev_e[0]["sha256"]
            vecs.append(prev_e[1])
            reused += 1
        else:
            e["sha256"] = file_sha256(f)
            if prev_e is not None and prev_e[0]["sha256"] == e["sha256"]:  # touched, not changed
                vecs.append(prev_e[1])
                reused += 1
            else:
                vecs.append(None)
                todo.append(len(entries))
        entries.append(e)
    for n, i in enumerate(todo):
        vecs[i] = emb_fn(read_image(root / entries[i]["path"]))[0].float().cpu()
        if progress is not None:
            progress(n + 1, len(todo))
    emb = torch.stack([v for v in vecs if v is not None])
    index = Index(root, spec, entries, emb)
    removed = len(set(old) - {e["path"] for e in entries})
    index.stats = {"embedded": len(todo), "reused": reused, "removed": removed, "total": len(entries)}
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(index, out)
    return index


def spherical_distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``arccos`` of the cosine similarity of ``u [D]`` (or ``[B, D]``) with each row of ``v [N, D]``."""
    un = F.normalize(u.float(), dim=-1)
    vn = F.normalize(v.float(), dim=-1)
    return torch.arccos((un @ vn.T).clamp(-1.0, 1.0))


def query(
    index: Index | str | Path,
    image: torch.Tensor | str | Path,
    k: int = 5,
    *,
    embed: str | Any | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` nearest files to ``image`` (``[1, 3, H, W]`` in [0, 1] or a path) as ``(path, distance)``,
    nearest first. Uses the index's own embedder unless ``embed`` is given (it must have the same spec)."""
    idx = index if isinstance(index, Index) else load_index(index)
    if isinstance(image, str | Path):
        from diffrestore.io.images import read_image

        image = read_image(image)
    emb_fn = get_embedder(idx.embed if embed is None else embed)
    if _spec_of(emb_fn) != idx.embed:
        raise UserError(f"the index was built with embedding {idx.embed!r}, not {_spec_of(emb_fn)!r}")
    q = emb_fn(image[None] if image.dim() == 3 else image)[0]
    d = spherical_distance(q, idx.embeddings)
    k = min(int(k), d.numel())
    vals, order = torch.topk(d, k, largest=False)
    paths = idx.paths()
    return [(str(paths[int(i)]), float(v)) for v, i in zip(vals, order)]


def embed_images(images: Iterable[torch.Tensor], embed: str | Any | None = None) -> torch.Tensor:
    """Embeddings ``[N, D]`` of ``[1, 3, H, W]`` images in [0, 1] (for benchmarks and tests)."""
    emb_fn = get_embedder(embed)
    return torch.cat([emb_fn(im).float().cpu() for im in images])
