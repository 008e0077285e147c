"""Dataset registry: how to prepare each dataset and the run-config defaults it implies.

`prepare` writes `ROOT/NAME/split.csv` with columns `path,label,split` (path relative to
`ROOT/NAME`, label the dataset's own class id, split `train` or `test`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Preparer(Protocol):
    def __call__(
        self, root: Path, *, urls: list[str] | None, md5: str | None, archive: Path | None
    ) -> Path: ...


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    prepare: Preparer
    channels: int = 3
    run_defaults: dict[str, Any] = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    _load()
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def dataset_names() -> list[str]:
    _load()
    return sorted(DATASETS)


def _load() -> None:
    from hdml.datasets import cars196, cub200, digits, sop  # noqa: F401  (each registers on import)
