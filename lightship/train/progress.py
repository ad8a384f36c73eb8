"""Progress display: a rich bar on a terminal, plain lines otherwise (logs, CI, pipes).

rich is imported only when the bar is shown: plain-line runs do not pay its import at start-up.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Epoch/step progress with loss, accuracy, images/s and ETA."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, enabled: bool | None = None,
                 quiet: bool = False, title: str = "train", setup: str = "") -> None:
        self.total_epochs, self.steps_per_epoch = total_epochs, steps_per_epoch
        self.quiet = quiet
        self.setup = setup  # precision, device and CPU (Precision.describe): first and last line
        self.rich = (sys.stderr.isatty() if enabled is None else enabled) and not quiet
        self.title = title
        self._bar = None
        self._task = None
        self._t0 = time.perf_counter()

    def start(self, epoch: int) -> None:
        self._t0 = time.perf_counter()
        self._start_epoch = epoch
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False)
            total = self.total_epochs * self.steps_per_epoch
            self._task = self._bar.add_task(self.title, total=total, info="",
                                            completed=epoch * self.steps_per_epoch)
            self._bar.start()
            self._bar.console.print(self._first_line())
        elif not self.quiet:
            print(self._first_line(), flush=True)

    def _first_line(self) -> str:
        return (f"training {self.title}: {self.total_epochs} epochs × {self.steps_per_epoch} "
                f"steps" + (f"; {self.setup}" if self.setup else ""))

    def step(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, info=f"loss {loss:.4f}")

    def epoch_end(self, epoch: int, rec: dict[str, Any]) -> None:
        top1 = rec.get("test_top1")
        acc = f"test top-1 {top1:.2f}%" if top1 is not None else "no eval"
        line = (f"epoch {epoch}/{self.total_epochs}  train loss {rec['train_loss']:.4f}  {acc}  "
                f"{rec['ips']:.0f} img/s  lr {rec['lr']:.4g}")
        if self._bar is not None:
            self._bar.update(self._task, info=f"ep {epoch} loss {rec['train_loss']:.4f} {acc} "
                                              f"{rec['ips']:.0f} img/s")
            self._bar.console.print(line)
        elif not self.quiet:
            done = epoch - self._start_epoch
            spent = time.perf_counter() - self._t0
            eta = spent / max(done, 1) * (self.total_epochs - epoch)
            print(f"{line}  eta {_fmt_time(eta)}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self, summary: dict[str, Any], run_dir: Path) -> None:
        if self.quiet:
            return
        top1 = summary.get("test_top1")
        acc = f"test top-1 {top1:.2f}%" if top1 is not None else "no evaluation"
        print(f"{summary['status']}: {summary['model']} on {summary['data']}: {acc} "
              f"(best {summary['best_top1']:.2f}% at epoch {summary['best_epoch']}), "
              f"train loss {summary['train_loss']:.4f}, {_fmt_time(summary['wall_time_s'])}"
              + (f", {self.setup}" if self.setup else "") + f"; run folder: {run_dir}",
              flush=True)
        print(f"verdict: {summary['verdict_line']}", flush=True)
