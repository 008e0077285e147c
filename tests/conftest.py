"""Shared fixtures: the digits dataset prepared once per session, a PATH with `hdml`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from hdml.data.datasets.digits import prepare
from hdml.data.valsplit import write_val

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["httpserver"]  # the `http_server` fixture of tests/httpserver.py
torch.set_num_threads(1)


@pytest.hookimpl(trylast=True)  # after `-m` has deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`pytest -m gpu` on a machine without CUDA is an error, not a run of skips."""
    if any(item.get_closest_marker("gpu") for item in items) and not torch.cuda.is_available():
        raise pytest.UsageError("tests marked gpu were selected but torch sees no CUDA device")


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare(root)
    return root


@pytest.fixture(scope="module")
def carved_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with validation classes carved from the training classes (`write_val`), one copy
    per test module, for the runs that select or tune on validation."""
    root = tmp_path_factory.mktemp("carved")
    prepare(root)
    write_val(root, "digits")
    return root


@pytest.fixture(scope="session")
def venv_env() -> dict[str, str]:
    """Environment whose PATH finds this interpreter's `hdml` and `snakemake` first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
