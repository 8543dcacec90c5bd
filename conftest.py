"""Test-session set-up shared by unit tests and the nbval notebook run.

Notebooks (run by nbval in their own kernels, which inherit this environment) and tests write into a
throw-away outputs folder, never into the user's ``outputs/``.

Tiers (markers registered in pyproject.toml): a plain ``pytest`` runs the fast tier, the unit tests
(under 2 minutes on 2 cores); ``slow`` tests (training, subprocess commands, real-size data) and the
``notebooks`` tier (every notebook run by nbval, and the papermill runs of tests/test_notebooks.py) are
named and run by ``make test`` (``pytest -m ""``), which CI runs. ``pytest -m slow`` or ``-m notebooks``
runs one tier.
"""

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    if "FPLIB_OUTPUTS" not in os.environ:
        os.environ["FPLIB_OUTPUTS"] = tempfile.mkdtemp(prefix="fplib-test-outputs-")
    os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    for item in items:  # the notebook tier: nbval's cells and the papermill runs
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb" or path.name == "test_notebooks.py":
            item.add_marker(pytest.mark.notebooks)
