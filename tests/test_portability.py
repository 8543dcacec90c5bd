"""The cheap part of the portability matrix (benchmarks/portability.py --quick): the learning checks of
tests/learning.py once more in a process that emulates an AVX2 CPU for oneDNN and runs ATen without vector
kernels, on one thread, each at least MIN_MARGIN times beyond its bound. The whole matrix (every kernel
variant, threads 1, 2 and 16, three seeds, and the demo's family training) is `make portability`."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests import learning

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_learning_checks_hold_by_a_wide_margin_under_other_cpu_kernels():
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "portability.py"),
            "--quick",
            "--min-margin",
            str(learning.MIN_MARGIN),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"every margin at least {learning.MIN_MARGIN}x" in r.stdout
    assert r.stdout.count("margin") >= 2 * len(learning.CHECKS)
