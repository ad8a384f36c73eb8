"""Reports of run folders: a self-contained HTML page, and TensorBoard scalars.

Names are imported on first use (PEP 562), so building the CLI parser, which imports
``lightship.report.cli``, does not load the HTML and plotting code into every ``lightship train``.
"""

from lightship.lazy import lazy_getattr

_HOME = {"load_run": ".html", "render_html": ".html", "write_report": ".html",
         "write_scalars": ".tensorboard"}
__all__ = list(_HOME)
__getattr__ = lazy_getattr(__name__, _HOME)
