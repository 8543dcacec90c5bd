"""Files: project paths, atomic writes, plain (never pickled) arrays, JSON and JSON-lines logs.

Everything fplib writes goes through these helpers so that an interrupted job never leaves a
half-written file under its final name: data go to a temporary file in the same folder, which is
then renamed over the target (``os.replace`` is atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

OUTPUTS_ENV = "FPLIB_OUTPUTS"


def project_root() -> Path:
    """The repository folder that holds ``fplib/`` (fplib is installed editable from it)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists():
        raise RuntimeError(
            f"fplib is not running from its repository ({root} has no pyproject.toml); "
            f"set {OUTPUTS_ENV} to choose where outputs go"
        )
    return root


def outputs_root() -> Path:
    """Where runs write: ``$FPLIB_OUTPUTS`` if set, else ``<repository>/outputs``."""
    env = os.environ.get(OUTPUTS_ENV)
    return Path(env).expanduser().resolve() if env else project_root() / "outputs"


def run_dir(run_name: str) -> Path:
    """``outputs/<run_name>/``, created if missing. ``run_name`` must be a plain folder name."""
    if not run_name or Path(run_name).name != run_name or run_name in {".", ".."}:
        raise ValueError(f"run_name must be a plain folder name, got {run_name!r}")
    path = outputs_root() / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    The temporary name keeps the target's suffix so that writers which infer the format from the
    extension (soundfile, numpy) do the right thing. On error the temporary file is removed and the
    previous ``target`` (if any) is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_array(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Save a plain numeric array as ``.npy`` (no pickle), atomically."""
    arr = np.asarray(arr)
    if arr.dtype == object:
        raise TypeError(f"{path}: refusing to save an object array (it would need pickle)")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.npy`` file written by :func:`save_array`; pickled content is refused."""
    return np.load(path, allow_pickle=False)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line and flush it to disk (a progress log that survives kills)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines log; a last line cut short by a kill is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
