"""The browser UI (``diffrestore serve``, optional extra ``ui``): ``app.build_app`` / ``app.serve``.

Importing this package does not import gradio; ``diffrestore.ui.app`` does (install ``.[ui]``).
"""
