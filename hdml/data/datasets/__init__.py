"""Dataset registry: how to prepare each dataset and the run-config defaults it implies.

`prepare` writes `ROOT/NAME/split.csv` with columns `path,label,split` (path relative to
`ROOT/NAME`, label the dataset's own class id, split a name of `hdml.data.splits`: `train` and
`test`, or `train`, `query` and `gallery`, optionally `val`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hdml.core.discovery import import_modules
from hdml.core.suggest import did_you_mean


class Preparer(Protocol):
    def __call__(
        self, root: Path, *, urls: list[str] | None, md5: str | None, archive: Path | None
    ) -> Path: ...


@dataclass(frozen=True)
class DatasetSpec:
    """`run_defaults` hold for every method; `layout_defaults` add to them for the methods of
    one batch layout (`npair`, `triplet`, `m_per_class`, see `hdml.data.samplers`), because a
    batch that suits one layout can need more classes than a small dataset has in another.
    `files` describes, for `hdml prepare --help` and download hints, what to fetch by hand:
    each entry (name, size, md5). `title` is the dataset's name in the report. `demo`: a toy
    task that checks the suite's machinery, whose numbers say nothing about the methods (the
    report puts a banner on any report built from it). `report_order`: the dataset's place in
    the report, ascending (ties by name): the paper's datasets first, in its tables' order."""

    name: str
    prepare: Preparer
    channels: int = 3
    run_defaults: dict[str, Any] = field(default_factory=dict)
    layout_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: tuple[tuple[str, str, str], ...] = ()
    title: str = ""
    demo: bool = False
    report_order: int = 100

    def defaults_for(self, method: str) -> dict[str, Any]:
        """The dataset's run-config defaults for one method (its batch layout's added)."""
        # here: the registry imports torch and the plug-ins, which `hdml prepare` does not need (start-up time)
        from hdml.core.registry import method_sampler

        extra = self.layout_defaults.get(method_sampler(method), {})
        return {**self.run_defaults, **extra}


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    _load()
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; "
                       f"known: {', '.join(sorted(DATASETS))}") from None


def dataset_names() -> list[str]:
    _load()
    return sorted(DATASETS)


def _load() -> None:
    """Import every module of this package: a dataset module registers itself on import, so a new
    one needs no line anywhere else; one that fails to import is an error naming its file."""
    import_modules(__name__, "dataset")
