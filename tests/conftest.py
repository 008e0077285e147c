"""Shared fixtures: the digits dataset prepared once per session, a PATH with `hdml`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from hdml.datasets.digits import prepare

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["httpserver"]  # the `http_server` fixture of tests/httpserver.py
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare(root)
    return root


@pytest.fixture(scope="session")
def venv_env() -> dict[str, str]:
    """Environment whose PATH finds this interpreter's `hdml` and `snakemake` first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
