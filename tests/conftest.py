"""Test session set-up: exported inference graphs (fplib/engine.py) and notebook signatures go to folders
of this session, removed at its end, not to the user's cache and Jupyter data folder (subprocesses and
notebook kernels inherit them)."""

import os
import shutil
import tempfile

_made: list[str] = []


def pytest_configure(config):
    if "FPLIB_CACHE" not in os.environ:
        _made.append(tempfile.mkdtemp(prefix="fplib-test-cache-"))
        os.environ["FPLIB_CACHE"] = _made[-1]
    if "JUPYTER_DATA_DIR" not in os.environ:  # notebook signatures the tests make, not in the user's own
        _made.append(tempfile.mkdtemp(prefix="fplib-test-jupyter-"))
        os.environ["JUPYTER_DATA_DIR"] = _made[-1]


def pytest_unconfigure(config):
    for d in _made:
        shutil.rmtree(d, ignore_errors=True)
