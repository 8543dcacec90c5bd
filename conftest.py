"""Test-session set-up shared by unit tests and the nbval notebook run.

Notebooks (run by nbval in their own kernels, which inherit this environment) and tests write into a
throw-away outputs folder, never into the user's ``outputs/``.
"""

import os
import tempfile


def pytest_configure(config):
    if "FPLIB_OUTPUTS" not in os.environ:
        os.environ["FPLIB_OUTPUTS"] = tempfile.mkdtemp(prefix="fplib-test-outputs-")
    os.environ.setdefault("MPLBACKEND", "Agg")
