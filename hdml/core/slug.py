"""The one rule for names that become file and folder names (dataset, method, variant): refused,
never mapped, when one could leave its folder or garble a path, so two runs never share a file and
`hdml report --out DIR` writes only under DIR. What reaches HTML is escaped separately (report.page)."""
from __future__ import annotations

import unicodedata
from typing import Any

KEYS = ("dataset", "method", "variant")


def slug_error(name: Any) -> str | None:
    """Why `name` cannot be a file name, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty text"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if ".." in name:
        return "holds '..'"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "holds a control character"
    if len(name.encode()) > 200:
        return "is longer than 200 bytes"
    return None


def check_slug(name: Any, what: str, where: object) -> str:
    """`name`, if it is a safe file name; else a ValueError naming `where` and `what`."""
    if (why := slug_error(name)) is not None:
        raise ValueError(f"{where}: {what} {name!r} {why}")
    return name


def check_names(table: Any, where: object) -> None:
    """Every dataset, method and variant of a pandas table (as text) is a safe file name."""
    for key in KEYS:
        if key in table.columns:
            for value in table[key].unique():
                check_slug(value, key, where)
