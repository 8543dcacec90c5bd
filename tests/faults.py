"""Fault injection for real processes: kill a job (SIGKILL) at a chosen write, or make that write fail.

``FPLIB_FAULT="ACTION:PATTERN[:N]"`` names the N-th (default: first) write whose file name matches
PATTERN (fnmatch: ``best.pt``, ``*.npy``, ``*``) among the writes that go through
:func:`fplib.storage.atomic_path` (every file fplib writes), :func:`fplib.storage.append_jsonl`
(progress and metrics logs), :func:`fplib.storage.write_at` (appends to a catalogue's vector store) and
the catalogue's write transactions (``catalogue.sqlite``: :meth:`fplib.catalogue.Catalogue._write`). ACTION
is one of

* ``kill-before``: SIGKILL itself just before the write starts;
* ``kill-torn``: SIGKILL itself in the middle of the write: half the data are on disk, in the temporary
  file (or, for a log, half of the new line at the end of the log itself);
* ``kill-after``: SIGKILL itself just after the write completed;
* ``enospc``: the write fails with ``OSError(ENOSPC)`` half-way, as on a full disk (a catalogue's
  transaction: with SQLite's own ``database or disk is full`` as it commits);
* ``interrupt``: ``KeyboardInterrupt`` (Ctrl-C) arrives just before the write;
* ``count``: nothing fails; every matching write's file name is appended to ``$FPLIB_FAULT_LOG``.

``python -m tests.faults COMMAND ARGS...`` runs ``fplib COMMAND ARGS...`` with the fault installed;
:func:`install` installs it in the current process (e.g. a forked child that then calls ``fplib.cli.main``).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import signal
import sys
from pathlib import Path

ACTIONS = ("kill-before", "kill-torn", "kill-after", "enospc", "interrupt", "count")


def parse(spec: str) -> tuple[str, str, int]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ACTIONS:
        raise ValueError(f"FPLIB_FAULT={spec!r}: expected ACTION:PATTERN[:N], ACTION one of {ACTIONS}")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 1


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _half(path: Path) -> None:
    """Cut a file to half its size (what a kill in the middle of writing it leaves)."""
    if path.exists():
        os.truncate(path, path.stat().st_size // 2)


def install(spec: str | None = None) -> None:
    """Patch fplib's writers in this process with the fault ``spec`` (default: ``$FPLIB_FAULT``)."""
    spec = spec if spec is not None else os.environ.get("FPLIB_FAULT", "")
    if not spec:
        return
    action, pattern, nth = parse(spec)
    from fplib import storage

    seen = [0]
    log = os.environ.get("FPLIB_FAULT_LOG")

    def hit(target) -> bool:
        name = Path(target).name
        if not fnmatch.fnmatchcase(name, pattern):
            return False
        seen[0] += 1
        if action == "count":
            if log:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(name + "\n")
            return False
        return seen[0] == nth

    original_atomic, original_append = storage.atomic_path, storage.append_jsonl

    def before(target) -> bool:
        """Whether this write is the chosen one; the faults that strike before it is made."""
        now = hit(target)
        if now and action == "kill-before":
            _kill()
        if now and action == "interrupt":
            raise KeyboardInterrupt
        return now

    @contextlib.contextmanager
    def atomic_path(target):
        now = before(target)
        with original_atomic(target) as tmp:
            yield tmp
            if now and action == "kill-torn":
                _half(tmp)
                _kill()
            if now and action == "enospc":
                _half(tmp)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if now and action == "kill-after":
            _kill()

    def append_jsonl(path, record):
        now = before(path)
        if now and action == "kill-torn":
            import json

            line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
            with open(path, "ab") as f:
                f.write(line[: len(line) // 2])
                f.flush()
                os.fsync(f.fileno())
            _kill()
        if now and action == "enospc":
            real_fsync = storage.os.fsync

            def full(fd):  # the line is written; the disk turns out to be full when it is flushed
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            storage.os.fsync = full
            try:
                return original_append(path, record)
            finally:
                storage.os.fsync = real_fsync
        original_append(path, record)
        if now and action == "kill-after":
            _kill()

    original_write_at = storage.write_at

    def write_at(path, offset, data):  # an append to the catalogue's vector store
        now = before(path)
        if now and action == "kill-torn":
            original_write_at(path, offset, data[: len(data) // 2])
            _kill()
        if now and action == "enospc":
            original_write_at(path, offset, data[: len(data) // 2])
            raise storage.DiskFullError(path)
        original_write_at(path, offset, data)
        if now and action == "kill-after":
            _kill()

    from fplib.catalogue import Catalogue

    original_write = Catalogue._write

    @contextlib.contextmanager
    def transaction(self):  # a write transaction of catalogue.sqlite
        now = before(self.path)
        with original_write(self):
            yield
            if now and action == "kill-torn":  # in the middle: SQLite's journal undoes it
                _kill()
            if now and action == "enospc":  # what SQLite says when its journal or the database cannot grow
                import sqlite3

                raise sqlite3.OperationalError("database or disk is full")
        if now and action == "kill-after":
            _kill()

    storage.atomic_path = atomic_path
    storage.append_jsonl = append_jsonl
    storage.write_at = write_at
    if fnmatch.fnmatchcase("catalogue.sqlite", pattern):  # (else left alone: nothing to inject there)
        Catalogue._write = transaction
    for name, module in list(sys.modules.items()):  # modules that imported the name itself (fplib.audio)
        if name.startswith("fplib.") and getattr(module, "atomic_path", None) is original_atomic:
            module.atomic_path = atomic_path


def main(argv: list[str] | None = None) -> int:
    install()
    from fplib import cli

    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())


# -- comparing the files of a killed-and-rerun job with those of an uninterrupted one ------------------

# per-epoch fields that measure time, different in every run (killed or not)
TIMING_FIELDS = ("seconds", "pairs_per_s", "data_wait_frac")


def _without_timing(record):
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS} if isinstance(record, dict) else record


def _same(a, b) -> bool:
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b or (a != a and b != b)  # NaN == NaN here


def _checkpoint_content(path: Path) -> dict:
    from fplib.checkpoints import load_checkpoint

    ck = load_checkpoint(path)
    if "metrics" in ck:
        ck["metrics"] = _without_timing(ck["metrics"])
    return ck


def _catalogue_content(path: Path) -> tuple:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        songs = db.execute(
            "SELECT id, name, path, duration, first_vector, n_vectors, checksum FROM songs ORDER BY id"
        ).fetchall()
        meta = db.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    return songs, meta


def compare_trees(ref: Path, got: Path) -> tuple[list[str], list[str]]:
    """The files under ``got`` against those under ``ref``: (differences, files equal only in content).

    Every file must be byte-identical, except where a file legitimately embeds the time: checkpoints
    (``*.pt``: the epoch's metrics record holds its duration) and ``metrics.jsonl`` are compared without
    the timing fields (:data:`TIMING_FIELDS`), ``catalogue.sqlite`` by its rows without the time each
    song was added (SQLite's pages differ anyway). Leftover temporary files count as differences."""
    import json

    ref_files = {p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file()}
    got_files = {p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()}
    diffs = [f"{f}: missing" for f in sorted(ref_files - got_files)]
    diffs += [f"{f}: not in the uninterrupted run" for f in sorted(got_files - ref_files)]
    content_only = []
    for f in sorted(ref_files & got_files):
        a, b = ref / f, got / f
        if a.read_bytes() == b.read_bytes():
            continue
        name = Path(f).name
        if name.endswith(".pt"):
            same = _same(_checkpoint_content(a), _checkpoint_content(b))
        elif name == "metrics.jsonl":
            rows = [[_without_timing(json.loads(ln)) for ln in p.read_text().splitlines()] for p in (a, b)]
            same = rows[0] == rows[1]
        elif name == "catalogue.sqlite":
            same = _catalogue_content(a) == _catalogue_content(b)
        else:
            same = False
        (content_only if same else diffs).append(f if same else f"{f}: different content")
    return diffs, content_only
