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


# Module fixtures that build a corpus or a catalogue, or train a network, once for their file (4-12 s each
# on 2 cores): every test that uses one is in the slow tier, with the tests marked @pytest.mark.slow.
SLOW_FIXTURES = {
    "test_corpus.py": "built",
    "test_corpus_render.py": "rendered",
    "test_cli.py": "world",
    "test_reliability_files.py": "world",
    "test_listen.py": "setup",
    "test_families.py": "trained",
    "test_segments.py": "world",
}


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        fixture = SLOW_FIXTURES.get(item.path.name)
        if fixture and fixture in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
