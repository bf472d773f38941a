"""What a loader hands to load_dataset before splitting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradwise.data._dataset import Dataset, Task


@dataclass(frozen=True)
class Source:
    """All samples of a dataset, plus the test split it ships with, if any."""

    data: Dataset
    task: Task
    num_classes: int | None
    source: str  # where the samples come from, for DataSplits.description
    test: Dataset | None = None
    class_labels: tuple[Any, ...] | None = None
