"""diffrestore: zero-shot and trained diffusion restoration of photos of any size."""

__version__ = "0.1.0"
