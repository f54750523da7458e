"""The browser UI (``diffrestore serve``): a Gradio page around ``diffrestore.restore``.

Why Gradio: it is what this field's demos (DDNM, ResShift) use, so people know the page; it gives upload /
drag-and-drop / paste, a queue, a progress bar and a before/after slider for free. The page runs exactly the
CLI's pipeline: task flags and method options come from the same declarations (``ui.options``), values are
checked by the same code, the result is written by the same ``write_image``, so a download equals
``diffrestore restore`` with the same settings and seed.

Rules of the server: one restoration at a time (queue, concurrency 1, plus a lock so a cancelled run has
unwound before the next starts: the machine may have 2 cores); Cancel stops the run at its next tile batch
(the progress callback raises); every user-fixable problem is one line in the page (``gr.Error``), never
a stack trace; nothing is fetched from the network (system fonts, no analytics).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import dataclasses  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from diffrestore.errors import UserError  # noqa: E402
from diffrestore.ui.options import WidgetSpec, method_specs, method_values, task_namespace, task_specs  # noqa: E402

__all__ = ["build_app", "serve"]

#: Tasks the page offers: compressed sensing observes coefficients (a .npy from ``degrade``), not a photo.
UI_TASKS_EXCLUDED = ("cs",)
DEFAULT_MAX_MEGAPIXELS = 36.0
_SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
_MONO_FONTS = ["ui-monospace", "monospace"]


class RunCancelled(Exception):
    """Raised from the progress callback when the user pressed Cancel."""


@dataclasses.dataclass
class ServerSettings:
    """What ``serve`` fixes for every run (the page does not offer these)."""

    device: str = "cpu"
    models_dir: str | None = None
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    workdir: Path = dataclasses.field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="diffrestore-ui-")))


_RUN_LOCK = threading.Lock()
#: gradio passes the progress tracker it finds as a parameter's default (one instance serves every call).
_PROGRESS = gr.Progress()
_CANCEL: dict[str, threading.Event] = {}


# ------------------------------------------------------------------------------------------ widgets
def _widget(spec: WidgetSpec, visible: bool, prefix: str) -> Any:
    """The component for one declared option; its DOM id is ``{prefix}-{name}`` (tests, styling)."""
    common = {"label": spec.label, "info": spec.info, "visible": visible, "elem_id": f"{prefix}-{spec.name}"}
    if spec.kind == "number":
        return gr.Number(value=spec.value, minimum=spec.minimum, maximum=spec.maximum,
                         precision=0 if spec.integer else None, **common)
    if spec.kind == "checkbox":
        return gr.Checkbox(value=bool(spec.value), **common)
    if spec.kind == "dropdown":
        value = spec.value if spec.value is not None else ""
        return gr.Dropdown(choices=list(spec.choices or ()), value=value, allow_custom_value=spec.custom,
                           filterable=spec.custom, **common)
    return gr.Textbox(value="" if spec.value is None else str(spec.value),
                      placeholder=spec.placeholder or None, **common)


def _file_path(payload: Any) -> tuple[str, str] | None:
    """(server path, the user's file name) of an un-preprocessed file/image payload."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        path = payload.get("path")
        name = payload.get("orig_name") or (Path(path).name if path else "")
    else:
        path = getattr(payload, "path", None) or (payload if isinstance(payload, str) else None)
        name = getattr(payload, "orig_name", None) or (Path(path).name if path else "")
    return (str(path), str(name)) if path else None


# ------------------------------------------------------------------------------------------ one run
def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "error"


def _read_photo(path: str, name: str, max_megapixels: float) -> Any:
    """The observation ``[1, 3, h, w]``; too large or unreadable files are one-line ``UserError`` s that
    name the user's file, not the server's temporary copy."""
    from PIL import Image

    from diffrestore.io.images import read_image

    try:
        with Image.open(path) as im:  # header only: refuse a giant photo before decoding it
            w, h = im.size
    except Exception:
        w = h = 0
    if w * h > max_megapixels * 1e6:
        raise UserError(f"{name} is {w}x{h} ({w * h / 1e6:.0f} MP); this server takes photos up to "
                        f"{max_megapixels:g} MP (diffrestore serve --max-megapixels, or the CLI)")
    try:
        return read_image(path)
    except UserError as e:
        raise UserError(str(e).replace(path, name)) from None


def _drawn_mask(editor: Any, h: int, w: int) -> Any:
    """Known-pixel mask ``[1, 1, h, w]`` from the strokes painted in the editor (painted = hole), or None
    when nothing was painted."""
    import numpy as np
    import torch
    from PIL import Image

    if not isinstance(editor, dict):
        return None
    holes = np.zeros((h, w), bool)
    for layer in editor.get("layers") or []:
        fp = _file_path(layer)
        if fp is None:
            continue
        with Image.open(fp[0]) as im:
            a = np.asarray(im.convert("RGBA"))[..., 3]
        if a.shape != (h, w):
            a = np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.NEAREST))
        holes |= a > 0
    if not holes.any():
        return None
    return torch.from_numpy(~holes)[None, None]


def _before_image(y: Any, H: int, W: int, path: Path) -> Path:
    """The observation scaled (nearest) to the result's size, for the before/after slider."""
    import numpy as np
    import torch
    from PIL import Image

    from diffrestore.io.images import write_image

    a = (y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(a).resize((W, H), Image.Resampling.NEAREST)
    return write_image(path, torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None])


def _report(info: dict[str, Any], size: tuple[int, int], name: str) -> str:
    seam, nan = info.get("seam_score"), float("nan")
    rows = [
        ("result", f"{size[0]}x{size[1]} px"),
        ("time", f"{info.get('seconds', 0):.1f} s"),
        ("network calls", str(info.get("network_calls", ""))),
        ("consistency ‖Ax−y‖ rms", f"{info.get('consistency_rms', nan):.2e} "
                                   f"(after clamping {info.get('consistency_rms_clamped', nan):.2e})"),
        ("seam score", "—" if seam is None else f"{seam:.3f} (≈ 1: no visible seams)"),
        ("model", str(info.get("model", ""))),
        ("patch", str(info.get("patch", ""))),
        ("seed", str(info.get("seed", ""))),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### Report: {name}\n\n| | {name} |\n|---|---|\n{body}\n"


def restore_photo(data: dict[str, Any], settings: ServerSettings, progress: Any,
                  cancelled: threading.Event) -> dict[str, Any]:
    """One restoration from the page's values; returns the outputs' values by key (raises ``UserError``)."""
    from diffrestore.api import restore
    from diffrestore.cli.common import task_options
    from diffrestore.io.images import is_16bit, write_image, write_png16
    from diffrestore.operators.factory import TASKS

    photo = _file_path(data["photo"])
    if photo is None:
        raise UserError("drop, paste or choose a photo first")
    task, method = data["task"], data["method"]
    if task not in TASKS or task in UI_TASKS_EXCLUDED:
        raise UserError(f"task {task!r} is not available here; tasks: "
                        f"{', '.join(t for t in TASKS if t not in UI_TASKS_EXCLUDED)}")
    path, name = photo
    y = _read_photo(path, name, settings.max_megapixels)
    opts = task_options(task_namespace(task, data["task_options"]), y)
    if task == "inpaint":
        known = _drawn_mask(data.get("editor"), int(y.shape[-2]), int(y.shape[-1]))
        if known is not None:
            opts.pop("kind", None)
            opts["mask"] = known
    mopts = method_values(method, data["method_options"])
    from diffrestore.methods.base import get_method

    declared = get_method(method).option_names()
    if "device" in declared:
        mopts["device"] = settings.device
    if "models_dir" in declared and settings.models_dir:
        mopts["models_dir"] = settings.models_dir
    sigma_raw = data.get("sigma_y")
    sigma_y = 0.0 if sigma_raw in (None, "") else float(sigma_raw)

    plans: list[str] = []

    def check() -> None:
        if cancelled.is_set():
            raise RunCancelled

    def on_plan(summary: Any) -> None:
        check()
        plans.append(summary.describe())
        progress(0.0, desc=f"plan: {plans[-1]}")

    def on_event(ev: Any) -> None:
        check()
        shown = ", ".join(f"{k} {v}" for k, v in ev.info.items() if not str(k).startswith("_"))
        eta = "…" if ev.eta_s is None else f"{ev.eta_s:.0f} s"
        phase = ev.phase or "restoring"
        desc = f"{phase}: {shown} — ETA {eta}" if shown else f"{phase} — ETA {eta}"
        progress((ev.done, ev.total), desc=desc, unit=ev.unit)

    progress(0.0, desc="loading the model and checking the tiles")
    res = restore(y, task, method=method, sigma_y=sigma_y, progress=on_event, on_plan=on_plan,
                  **mopts, **opts)
    check()
    out = Path(tempfile.mkdtemp(dir=settings.workdir))
    stem = (Path(name).stem or "photo") + f"_{task}"
    H, W = (int(v) for v in res.image.shape[-2:])
    result = write_image(out / f"{stem}.png", res.image)
    before = _before_image(y, H, W, out / f"{stem}_before.png")
    png16 = write_png16(out / f"{stem}_16bit.png", res.image) if is_16bit(path) else None
    kernel_png = kernel_npy = None
    kernel = res.info.pop("kernel", None)
    if kernel is not None:  # blind deblurring: the estimated kernel (PNG to view, .npy to reuse)
        from diffrestore.methods.shred_kernel import save_kernel

        kernel_png, kernel_npy = save_kernel(kernel, out / f"{stem}.kernel")
    plan_md = "### Plan\n\n" + "\n".join(f"- {p}" for p in plans) if plans else "### Plan\n\n(none)"
    return {"slider": (str(before), str(result)), "png": str(result), "png16": png16 and str(png16),
            "kernel_npy": kernel_npy and str(kernel_npy), "kernel_png": kernel_png and str(kernel_png),
            "plan": plan_md, "report": _report(res.info, (W, H), name)}


# ------------------------------------------------------------------------------------------ the page
def build_app(settings: ServerSettings | None = None) -> gr.Blocks:
    """The Blocks of the page (queue set up; call ``launch``)."""
    from diffrestore.methods.base import METHODS
    from diffrestore.operators.factory import TASKS

    settings = settings or ServerSettings()
    tasks = [t for t in TASKS if t not in UI_TASKS_EXCLUDED]
    mspecs, tspecs = method_specs(), task_specs()
    first_method = "ddnm" if "ddnm" in METHODS else sorted(METHODS)[0]

    with gr.Blocks(title="diffrestore") as demo:
        gr.Markdown("## diffrestore — restore a photo of any size with diffusion models\n"
                    "Drop, paste or choose the degraded photo, pick the task and method, press **Restore**. "
                    "Runs are queued one at a time on this machine.")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(label="Photo (the observation: low-resolution, damaged, grey, ...)",
                                 type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 elem_id="photo")
                editor = gr.ImageEditor(label="Inpainting: paint over the holes", visible=False,
                                        sources=[], layers=False, transforms=[], elem_id="mask-editor",
                                        brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"))
                task = gr.Dropdown(choices=tasks, value="sr", label="Task", elem_id="task")
                labels = [(f"{c.label or n} ({n})", n) for n, c in sorted(METHODS.items())]
                method = gr.Dropdown(choices=labels,
                                     value=first_method, label="Method", elem_id="method",
                                     info=METHODS[first_method].description or None)
                sigma_y = gr.Number(value=0.0, minimum=0, label="sigma y", elem_id="opt-sigma_y",
                                    info="noise std of the observation, in [0,1] units (every method)")
                with gr.Accordion("Task options", open=True):
                    twidgets = {s.name: _widget(s, "sr" in s.applies_to, "task") for s in tspecs}
                with gr.Accordion("Method options", open=True):
                    mwidgets = {s.name: _widget(s, first_method in s.applies_to, "opt") for s in mspecs}
                with gr.Row():
                    run_btn = gr.Button("Restore", variant="primary", elem_id="run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Before / after (drag the handle; fullscreen to zoom)",
                                        type="filepath", format="png", interactive=False, elem_id="result",
                                        max_height=720)
                with gr.Row():
                    dl_png = gr.DownloadButton("Download PNG", visible=False, elem_id="download-png")
                    dl_png16 = gr.DownloadButton("Download 16-bit PNG", visible=False,
                                                 elem_id="download-png16")
                    dl_kernel = gr.DownloadButton("Download kernel (.npy)", visible=False,
                                                  elem_id="download-kernel")
                with gr.Row():
                    plan_md = gr.Markdown("### Plan\n\nThe tile plan appears here.", elem_id="plan")
                    report_md = gr.Markdown("### Report\n\nTime, consistency, seam score of the result.",
                                            elem_id="report")
                kernel_img = gr.Image(label="Estimated blur kernel", visible=False, interactive=False,
                                      elem_id="kernel")

        t_order, m_order = list(twidgets), list(mwidgets)

        def on_task(t: str) -> list[Any]:
            return ([gr.update(visible=t == "inpaint")]
                    + [gr.update(visible=t in s.applies_to) for s in tspecs])

        task.change(on_task, task, [editor, *twidgets.values()], queue=False)

        def on_method(m: str) -> list[Any]:
            desc = METHODS[m].description if m in METHODS else ""
            return [gr.update(info=desc or None)] + [gr.update(visible=m in s.applies_to) for s in mspecs]

        method.change(on_method, method, [method, *mwidgets.values()], queue=False)

        def on_photo(payload: Any) -> Any:
            fp = _file_path(payload)
            if fp is None:
                return gr.update(value=None)
            try:
                from PIL import Image

                with Image.open(fp[0]) as im:
                    im.size  # noqa: B018  (an image: the editor can show it)
            except Exception:
                return gr.update(value=None)
            return gr.update(value={"background": fp[0], "layers": [], "composite": None})

        photo.change(on_photo, photo, editor, preprocess=False, queue=False)

        inputs = [photo, editor, task, method, sigma_y, *twidgets.values(), *mwidgets.values()]
        outputs = [slider, dl_png, dl_png16, dl_kernel, kernel_img, plan_md, report_md]

        handler = _handler(settings, t_order, m_order)
        run_evt = run_btn.click(handler, set(inputs), outputs, preprocess=False, concurrency_limit=1,
                                concurrency_id="restore", show_progress="full")
        cancel_btn.click(_cancel, None, None, cancels=[run_evt], concurrency_limit=None, queue=True)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def _handler(settings: ServerSettings, t_order: list[str], m_order: list[str]) -> Any:
    """The Restore button's function; gradio calls it with one dict {component: raw value} (a set of
    inputs), the request (whose session a Cancel stops) and its progress tracker."""

    def handle(values: dict, request: gr.Request = None, progress: gr.Progress = _PROGRESS) -> list[Any]:
        by_id = {getattr(c, "elem_id", None): v for c, v in values.items()}
        data = {"photo": by_id["photo"], "editor": by_id["mask-editor"], "task": by_id["task"],
                "method": by_id["method"], "sigma_y": by_id["opt-sigma_y"],
                "task_options": {n: by_id[f"task-{n}"] for n in t_order},
                "method_options": {n: by_id[f"opt-{n}"] for n in m_order}}
        key = getattr(request, "session_hash", None) or "local"
        flag = threading.Event()
        _CANCEL[key] = flag
        try:
            with _RUN_LOCK:
                out = restore_photo(data, settings, progress, flag)
        except RunCancelled:
            print("diffrestore serve: a run was cancelled", file=sys.stderr, flush=True)
            raise gr.Error("cancelled", print_exception=False) from None
        except UserError as e:
            raise gr.Error(_one_line(str(e)), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:  # a bug of ours: the trace goes to the server's log, one line to the page
            traceback.print_exc(file=sys.stderr)
            first = _one_line(str(e).splitlines()[0] if str(e) else "")
            raise gr.Error(f"internal error ({type(e).__name__}: {first}); the server log has the details",
                           print_exception=False) from None
        finally:
            if _CANCEL.get(key) is flag:
                del _CANCEL[key]
        return [
            out["slider"],
            gr.update(value=out["png"], visible=True),
            gr.update(value=out["png16"], visible=out["png16"] is not None),
            gr.update(value=out["kernel_npy"], visible=out["kernel_npy"] is not None),
            gr.update(value=out["kernel_png"], visible=out["kernel_png"] is not None),
            out["plan"],
            out["report"],
        ]

    return handle


def _cancel(request: gr.Request = None) -> None:
    """Stop this browser session's run at its next tile batch (queued runs are dropped by gradio)."""
    key = getattr(request, "session_hash", None) or "local"
    flag = _CANCEL.get(key)
    if flag is not None:
        flag.set()


def serve(host: str = "127.0.0.1", port: int = 7860, *, device: str = "cpu", models_dir: str | None = None,
          max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, block: bool = True) -> gr.Blocks:
    """Launch the page on ``host:port``; prints where it is and how to reach it from elsewhere."""
    settings = ServerSettings(device=device, models_dir=models_dir, max_megapixels=max_megapixels)
    demo = build_app(settings)
    theme = gr.themes.Default(font=_SYSTEM_FONTS, font_mono=_MONO_FONTS)  # no web fonts: works offline
    try:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True,
                    show_error=False, ssr_mode=False, prevent_thread_lock=True, theme=theme,
                    allowed_paths=[str(settings.workdir)], footer_links=[])
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {_one_line(str(e))} (choose another --port)"
                        ) from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"diffrestore UI: http://{shown}:{port}/  (Ctrl-C stops it)", flush=True)
    if host in ("127.0.0.1", "localhost", "::1"):
        print("only this machine can open it; to reach it from another one, use an SSH tunnel "
              f"(ssh -L {port}:127.0.0.1:{port} THIS-HOST) or `diffrestore serve --host 0.0.0.0` on a "
              "trusted network (anyone who can reach the port can use it)", flush=True)
    else:
        print(f"listening on {host}: anyone who can reach port {port} can use it", flush=True)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo
