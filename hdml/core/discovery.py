"""How plug-ins are found: every module of a package is imported and registers itself, so adding one
is one new file and no line anywhere else (losses and methods in `baselines/`, datasets, report
sections). A lower layer finds plug-ins of a higher one this way without an import of them."""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType


def import_modules(package: str, kind: str) -> list[ModuleType]:
    """Import every module of `package`; one that fails to import is an ImportError naming its file
    (`kind` says what it was meant to be, e.g. "dataset")."""
    modules = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}."):
        try:
            modules.append(importlib.import_module(info.name))
        except Exception as exc:
            spec = importlib.util.find_spec(info.name)
            where = spec.origin if spec is not None else info.name
            raise ImportError(f"{where}: {kind} module {info.name} fails to import ({exc!r})") from exc
    return modules
