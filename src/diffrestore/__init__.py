"""diffrestore: zero-shot and trained diffusion restoration of photos of any size."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from diffrestore.api import RestoreResult

__all__ = ["__version__", "restore"]


def restore(*args: Any, **kwargs: Any) -> RestoreResult:
    """``diffrestore.api.restore`` (see there), imported on first call.

    Why a wrapper: ``import diffrestore`` must stay cheap (the CLI's ``--version``/``--help`` and tools that
    only read ``__version__``), so torch and the model code load only when a restoration is asked for.
    """
    from diffrestore.api import restore as _restore

    return _restore(*args, **kwargs)
