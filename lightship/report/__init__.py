"""Reports of run folders: a self-contained HTML page, and TensorBoard scalars.

Names are imported on first use (PEP 562), so building the CLI parser, which imports
``lightship.report.cli``, does not load the HTML and plotting code into every ``lightship train``.
"""

from importlib import import_module

_HOME = {"load_run": "html", "render_html": "html", "write_report": "html",
         "write_scalars": "tensorboard"}
__all__ = list(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(f"lightship.report.{_HOME[name]}"), name)
    raise AttributeError(f"module 'lightship.report' has no attribute '{name}'")
