"""What the rest of lightship needs to know about a loaded dataset."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, classes and preprocessing of a dataset (after the fraction/max_per_class subset).

    ``mean``/``std`` are per channel on the 0–1 scale, measured on the (subset) training split;
    batches are normalised with them and weights files store them for inference elsewhere.
    ``hflip_ok`` says whether a horizontal flip keeps the label (False for digits).
    """

    name: str
    num_classes: int
    classes: tuple[str, ...]
    in_chans: int
    input_size: int
    n_train: int
    n_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip_ok: bool
    source: str
