"""Reports of run folders: a self-contained HTML page, and TensorBoard scalars."""

from lightship.report.html import load_run, render_html, write_report
from lightship.report.tensorboard import write_scalars

__all__ = ["load_run", "render_html", "write_report", "write_scalars"]
