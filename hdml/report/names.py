"""What the report calls things and how methods relate, read from the plug-ins themselves: a
method's `display_name` (its loss class or `Method` class; `paper_name` where the paper's row
says otherwise), its `base` loss and `family`, a dataset's `DatasetSpec.title` and place on the
page (`report_order`), and HDML's default pulling factor `default_alpha`. A name without a
plug-in (a folder from an older run) shows as it is; the untrained reference
(hdml.core.reference) as its own name. The paper's own facts stay here; no report module names a
plug-in."""
from __future__ import annotations

from typing import Any

from hdml.core import reference
from hdml.core.registry import LOSSES, METHODS, load_plugins
from hdml.data.datasets import DatasetSpec, get_dataset

PAPER_TABLE = {"cub200": 1, "cars196": 2, "sop": 3}  # the paper's table number per dataset
TSNE_PAPER_ROW = "HDML (N-pair)"  # the method of the paper's t-SNE map (Figure 8), by its paper row


def plugin(method: str) -> Any:
    """The class registered as `method` (a `Method` or a `MetricLoss`), or None."""
    load_plugins()
    return METHODS.get(method) or LOSSES.get(method)


def display(method: str) -> str:
    if method == reference.NAME:
        return reference.DISPLAY
    return getattr(plugin(method), "display_name", None) or method


def paper_row(method: str) -> str:
    """The row of the paper's Tables 1-3 the method fills: its `paper_name` where the paper calls
    it otherwise than the report does, else its display name."""
    return getattr(plugin(method), "paper_name", None) or display(method)


def loss_terms(method: str) -> dict[str, str]:
    """The losses.csv columns beside J_m the method's plug-in declares, with their labels."""
    return dict(getattr(plugin(method), "loss_terms", None) or {})


def loss_figure(method: str) -> str | None:
    """Which report figure draws the method's own terms ("hdml", "generator"), as its plug-in says."""
    return getattr(plugin(method), "loss_figure", None)


def base_loss(method: str) -> str | None:
    """The registered loss `method` is built around (its plug-in's `base`), or None."""
    return getattr(plugin(method), "base", None)


def family(method: str) -> str | None:
    """The method's family ("HDML", "DAML"), as its plug-in says; None for a plain loss."""
    return getattr(plugin(method), "family", None)


def families(family: str) -> dict[str, str]:
    """{base loss: method} of the registered methods of `family` ("HDML", "DAML"), in
    registration order."""
    load_plugins()
    return {cls.base: name for name, cls in METHODS.items() if getattr(cls, "family", None) == family and cls.base}


def dataset_title(dataset: str) -> str:
    try:
        return get_dataset(dataset).title or dataset
    except KeyError:
        return dataset


def is_demo(dataset: str) -> bool:
    """Whether the dataset's plug-in declares it a demo (a machinery check, no evidence)."""
    try:
        return get_dataset(dataset).demo
    except KeyError:
        return False


def paper_alpha(method: str) -> float | None:
    """The method's own default pulling factor, used where a run's config leaves hdml.alpha null."""
    value = getattr(plugin(method), "default_alpha", None)
    return None if value is None else float(value)


def dataset_rank(dataset: str) -> tuple[int, str]:
    """Where the dataset goes on the page: its plug-in's `report_order`, then its name; a name
    without a plug-in (a folder from an older run) as a plug-in that declares no order."""
    try:
        return get_dataset(dataset).report_order, dataset
    except KeyError:
        return DatasetSpec.report_order, dataset


def dataset_sort(names) -> list[str]:
    return sorted(set(names), key=dataset_rank)
