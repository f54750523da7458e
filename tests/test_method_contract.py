"""The method contract: options declared once, tiling independent of methods, a new method in a few lines."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffrestore.api import restore
from diffrestore.cli.main import main
from diffrestore.errors import UserError
from diffrestore.methods.base import (
    METHODS,
    Method,
    Observation,
    Prior,
    all_option_fields,
    get_method,
    register,
)
from diffrestore.methods.options import RunOptions, TilingOptions, option
from diffrestore.nets import build_network
from diffrestore.operators.sr import AvgPoolSR
from diffrestore.tiling.runner import TileContext

SRC = Path(__file__).resolve().parents[1] / "src" / "diffrestore"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_tiling_imports_no_method_and_no_concrete_operator() -> None:
    """``tiling/`` works for any method and any operator through their declared facts only."""
    bad = []
    for f in sorted((SRC / "tiling").glob("*.py")):
        for mod in _imports(f):
            if mod.startswith("diffrestore.methods") or (
                mod.startswith("diffrestore.operators") and mod != "diffrestore.operators.base"
            ):
                bad.append(f"{f.name}: {mod}")
    assert not bad, bad


# ---------------------------------------------------------------- a minimal example method (the docs')
@dataclass
class BlurredPinvOptions:
    """blurred-pinv: its own options"""

    passes: int = option(1, "how many 3x3 box-blur passes over A+y", minimum=0)


@register
class BlurredPinv(Method):
    """A⁺y smoothed, then projected back onto A x = y: no network, but the full contract."""

    name = "example-blurred-pinv"
    label = "blurred A+y"
    description = "test example"
    groups = (TilingOptions, RunOptions)
    Options = BlurredPinvOptions

    def load(self) -> Prior:
        return Prior(spec="none", patch=32)

    def solver(self, prior: Prior, obs: Observation) -> object:
        passes = self.group(BlurredPinvOptions).passes

        class Solver:
            calls_per_tile, sequential = 0, False

            def __call__(self, ctx: TileContext) -> torch.Tensor:
                x = ctx.op.pinv(ctx.y)
                for _ in range(passes):
                    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
                x = x - ctx.op.pinv(ctx.op.A(x) - ctx.y)
                return ctx.pin(x)

        return Solver()


def test_example_method_runs_everywhere(tmp_path: Path) -> None:
    """Registered once: the API validates its options, ``restore --help`` and ``eval`` know its flag."""
    assert "example-blurred-pinv" in METHODS and all_option_fields()["passes"] == ["example-blurred-pinv"]
    y = torch.rand(1, 3, 20, 28)
    res = restore(y, "sr", scale=2, method="example-blurred-pinv", passes=2, tile=16)
    assert res.image.shape == (1, 3, 40, 56)
    assert res.info["consistency_rms"] < 1e-6  # projection + first-finished-wins keeps A x = y
    with pytest.raises(UserError, match="passes must be >= 0"):
        restore(y, "sr", scale=2, method="example-blurred-pinv", passes=-1)
    with pytest.raises(UserError, match="do not apply to method ddnm"):
        restore(y, "sr", scale=2, method="ddnm", passes=2)
    with pytest.raises(UserError, match="unknown option"):
        get_method("ddnm").configure({"stepz": 3})


def test_cli_flags_are_generated(capsys: pytest.CaptureFixture[str]) -> None:
    """Every declared option of every method is a flag of both ``restore`` and ``eval``."""
    for cmd in ("restore", "eval"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        for name in all_option_fields():
            if cmd == "eval" and name in ("seed", "device"):
                continue  # eval's own per-image seed and device
            flag = {"start_t": "--start"}.get(name, "--" + name.replace("_", "-"))
            assert flag in text, (cmd, flag)


def test_option_parsing_is_shared() -> None:
    """Strings (flags, TOML) and JSON values go through one parser with the declared types."""
    ddnm = get_method("ddnm")
    m = ddnm.configure({"travel": "2,3", "steps": "7", "eta": 0.5, "hierarchical": "true", "tile": 64})
    o = m.options()
    assert (o["travel"], o["steps"], o["eta"], o["hierarchical"], o["tile"]) == ((2, 3), 7, 0.5, True, 64)
    for bad in ({"eta": 2.0}, {"eta": "nan"}, {"steps": 0}, {"dtype": "float64"}, {"travel": "1"},
                {"steps": 2.5}, {"hierarchical": "maybe"}):
        with pytest.raises(UserError):
            ddnm.configure(bad)


def test_sigma_units_cross_one_boundary() -> None:
    """σ_y in [0, 1] units becomes model units once, for every method (ddnm-hq used to read it raw)."""
    op = AvgPoolSR(2).bind((3, 8, 8))
    obs = Observation.from_file_units(op, torch.full((1, 3, 4, 4), 0.25), 0.1, (1, 3, 8, 8))
    assert obs.sigma == pytest.approx(0.2)
    torch.testing.assert_close(obs.y, torch.full((1, 3, 4, 4), -0.5))


def test_unknown_model_config_key_is_an_error() -> None:
    cfg = {"image_size": 32, "in_channels": 3, "model_channels": 32, "out_channels": 3, "num_res_blocks": 1,
           "attention_resolutions": [], "use_new_attention_orders": True}
    with pytest.raises(UserError, match="use_new_attention_orders"):
        build_network("adm_unet", cfg)
    flags = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "use_new_attention_orders": True}
    with pytest.raises(UserError, match="use_new_attention_orders"):
        build_network("adm_unet", flags)
