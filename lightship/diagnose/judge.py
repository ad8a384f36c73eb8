"""The convergence verdict of a run folder: its records judged with its recipe's schedule facts.

The one entry point for a run's verdict (the loop at the end of a run, ``lightship diagnose``,
the report, :func:`lightship.diagnose`); it reads only the run folder.
"""

from __future__ import annotations

from pathlib import Path

from lightship.diagnose.decide import verdict
from lightship.diagnose.result import Verdict
from lightship.recipe import Recipe, load_saved_recipe
from lightship.runs import RunPaths, RunRecords, read_records


def judge_run(run_dir: str | Path, recipe: Recipe | None = None,
              records: RunRecords | None = None,
              reference: RunRecords | list[dict] | None = None) -> Verdict:
    """Verdict of ``run_dir`` (its saved recipe and metrics unless given, so a caller that has
    parsed them already does not parse them again); ``reference`` is a heavier net's run."""
    paths = RunPaths(Path(run_dir))
    records = records if records is not None else read_records(paths.root)
    recipe = recipe if recipe is not None else load_saved_recipe(paths.recipe)
    if isinstance(reference, RunRecords):
        reference = reference.records
    mixing = recipe.augment.mixup_alpha or recipe.augment.cutmix_alpha
    return verdict(records.records, schedule=recipe.schedule.name,
                   warmup_epochs=recipe.schedule.warmup_epochs, total_epochs=recipe.train.epochs,
                   mix_off_epochs=recipe.augment.mix_off_epochs if mixing else 0,
                   label_smoothing=recipe.train.label_smoothing, reference=reference)


def load_records(run_dir: Path | str) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (see :func:`lightship.runs.read_records`)."""
    return read_records(run_dir).records
