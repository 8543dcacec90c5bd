"""Test session set-up: exported inference graphs (fplib/engine.py) go to a folder of this session,
removed at its end, not to the user's cache (subprocesses and notebook kernels inherit it)."""

import os
import shutil
import tempfile

_made: list[str] = []


def pytest_configure(config):
    if "FPLIB_CACHE" not in os.environ:
        _made.append(tempfile.mkdtemp(prefix="fplib-test-cache-"))
        os.environ["FPLIB_CACHE"] = _made[0]


def pytest_unconfigure(config):
    for d in _made:
        shutil.rmtree(d, ignore_errors=True)
