"""Option declarations -> widget specs and back: the UI keeps no list of options of its own.

Why: the CLI's flags are generated from the methods' option dataclasses (``methods.options``) and from
the task group of ``cli.common.add_task_options``; the browser UI reads the very same declarations, so a
new method option or task flag appears in the page without touching the UI, with the same help text,
choices and bounds, and values are checked by the same ``parse_value`` / ``task_options`` code.

This module does not import gradio: specs are plain data (testable without the ``ui`` extra); ``app.py``
turns them into components.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any

from diffrestore.errors import UserError

__all__ = ["WidgetSpec", "method_specs", "method_values", "task_namespace", "task_specs"]

#: Method options the server sets itself (``serve --device / --models-dir``), not the page.
SERVER_OPTIONS = ("device", "models_dir")
#: Task flags with their own widget (the drawn mask) or none (operator files are a CLI workflow).
SKIP_TASK_FLAGS = ("task", "params", "mask", "invert_mask")


@dataclass
class WidgetSpec:
    """One widget: ``kind`` is ``number`` | ``checkbox`` | ``dropdown`` | ``text``."""

    name: str
    kind: str
    label: str
    info: str
    value: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    #: A drop-down that also takes typed values (model: a registry name or a checkpoint path).
    custom: bool = False
    #: Shown in an empty text box: empty means the declared default ("the model card's", ...).
    placeholder: str = ""
    #: Methods (method options) or tasks (task options) the widget applies to.
    applies_to: tuple[str, ...] = ()


def _base(tp: Any) -> Any:
    from diffrestore.methods.options import _base_type

    return _base_type(tp)[0]


def method_specs() -> list[WidgetSpec]:
    """A widget per declared option of every registered method (shared groups once, like the CLI)."""
    from diffrestore.methods.base import METHODS, all_option_fields, option_groups_of_all
    from diffrestore.methods.options import fields_of

    owners = all_option_fields()
    specs = []
    for name, (_, f) in fields_of(option_groups_of_all()).items():
        if name in SERVER_OPTIONS or not f.metadata.get("cli", True):
            continue
        tp = _base(f.type)
        meta = f.metadata
        default = None if f.default is dataclasses.MISSING else f.default
        who = tuple(owners.get(name, ()))
        info = meta.get("help", "")
        if len(who) < len(METHODS):
            info += f" [{', '.join(who)}]"
        spec = WidgetSpec(name, "text", name.replace("_", " "), info, default, applies_to=who)
        if name == "model":  # the registry's names, or a checkpoint path typed in
            from diffrestore.io.registry import known_names

            spec.kind, spec.choices, spec.custom, spec.value = "dropdown", ("", *known_names()), True, ""
        elif meta.get("choices"):
            spec.kind, spec.choices = "dropdown", tuple(meta["choices"])
        elif tp is bool:
            spec.kind, spec.value = "checkbox", bool(default)
        elif tp in (int, float) and default is not None:
            spec.kind, spec.integer = "number", tp is int
            spec.minimum, spec.maximum = meta.get("minimum"), meta.get("maximum")
        elif tp in (int, float):  # None = "the method's / model card's choice": an empty box, not 0
            spec.value, spec.placeholder, spec.integer = "", "default", tp is int
        elif typing.get_origin(tp) is tuple:
            spec.value = "" if default is None else ",".join(map(str, default))
        else:
            spec.value = "" if default is None else str(default)
        specs.append(spec)
    return specs


def method_values(method: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The options of ``method`` from widget values: empty widgets mean "the declared default"; values
    are checked by the declarations (``UserError`` naming the option)."""
    from diffrestore.methods.base import get_method
    from diffrestore.methods.options import fields_of, parse_value

    fields = fields_of(get_method(method).option_groups())
    out = {}
    for name, value in raw.items():
        if name not in fields or value is None or (isinstance(value, str) and not value.strip()):
            continue
        out[name] = parse_value(name, fields[name][1], value.strip() if isinstance(value, str) else value)
    return out


# ---------------------------------------------------------------------------------------------- tasks
_TASK_WORDS = {"inpaint": ("inpaint", "mask", "masks")}  # besides each task's own name


def _tasks_in(helptext: str, tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Tasks a task flag's help names (``"sr: avgpool|bicubic; deblur: ..."`` -> sr, deblur)."""
    words = set(re.findall(r"[a-z]+", helptext.lower()))
    return tuple(t for t in tasks if words & {t, *_TASK_WORDS.get(t, ())})


def _task_parser() -> argparse.ArgumentParser:
    from diffrestore.cli.common import add_task_options

    p = argparse.ArgumentParser(add_help=False)
    add_task_options(p, required=False)
    return p


def task_specs() -> list[WidgetSpec]:
    """A widget per flag of the CLI's task group (``cli.common.add_task_options``), shown for the tasks
    its help names; ``a | b | c`` in a help text becomes a drop-down."""
    from diffrestore.operators.factory import TASKS

    specs = []
    for a in _task_parser()._actions:
        if a.dest in SKIP_TASK_FLAGS or not a.option_strings:
            continue
        helptext = a.help or ""
        spec = WidgetSpec(a.dest, "text", a.option_strings[0].lstrip("-").replace("-", " "), helptext, "",
                          applies_to=_tasks_in(helptext, TASKS))
        if a.type in (int, float):  # every task flag defaults to "not given": an empty box
            spec.integer, spec.placeholder = a.type is int, "default"
        else:
            m = re.search(r"(\w+(?:\s+\|\s+\w+)+)\s*$", helptext)
            if m:
                spec.kind, spec.choices = "dropdown", ("", *(c.strip() for c in m.group(1).split("|")))
        specs.append(spec)
    return specs


def task_namespace(task: str, raw: dict[str, Any]) -> argparse.Namespace:
    """The namespace ``cli.common.task_options`` reads, from widget values (empty = not given)."""
    ns = _task_parser().parse_args([])
    ns.task = task
    for name, value in raw.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not hasattr(ns, name):
            raise UserError(f"unknown task option {name}")
        setattr(ns, name, _convert(name, value.strip() if isinstance(value, str) else value))
    return ns


def _convert(name: str, value: Any) -> Any:
    """A typed task flag's value as the CLI's ``type=`` would give it (one-line error otherwise)."""
    for a in _task_parser()._actions:
        if a.dest == name and a.type in (int, float):
            try:
                v = float(value)
                if a.type is int and not v.is_integer():
                    raise ValueError(value)
                return a.type(v)
            except (TypeError, ValueError):
                kind = "an integer" if a.type is int else "a number"
                raise UserError(f"task option {name}: {value!r} is not {kind}") from None
    return value
