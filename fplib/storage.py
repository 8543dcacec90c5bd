"""Files: project paths, atomic writes, plain (never pickled) arrays, JSON and JSON-lines logs.

Everything fplib writes goes through these helpers so that an interrupted job never leaves a
half-written file under its final name: data go to a temporary file in the same folder, flushed to
disk, which is then renamed over the target (``os.replace`` is atomic on POSIX file systems).

Temporary files are named ``.<stem>.<host>-<pid>.<random>.tmp<suffix>`` (host: a hash of the machine's
name, pid: the writing process), so that a later job can tell the leftovers of a killed writer
(:func:`clean_stale_temps`) from the file of a writer still at work. A full disk raises
:class:`DiskFullError`, which names the file; the previous version of the file is left untouched.
Jobs call :func:`check_writable` on their destinations before their work, so that a read-only or
unwritable one is one clear :class:`NotWritableError` at the start, not a traceback at the end.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
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


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; ``filename`` is the file. ``then``:
    what to do once space is freed, where running the same command again is not the answer (the
    commands say that otherwise)."""

    def __init__(self, path: str | os.PathLike, then: str = ""):
        super().__init__(errno.ENOSPC, "no space left on device", str(path))
        self.then = then

    def __str__(self) -> str:
        return f"{self.filename}: no space left on device (errno ENOSPC) while writing it"


class NotWritableError(OSError):
    """A destination that cannot be written (:func:`check_writable`): ``filename`` is the folder or file,
    ``reason`` why (read-only file system, permission denied, not a folder), ``consequence`` what that
    means (found before the work: nothing was done)."""

    def __init__(self, path: str | os.PathLike, reason: str, err: int | None = None, consequence: str = ""):
        super().__init__(err, reason, str(path))
        self.reason, self.consequence = reason, consequence or "nothing was done"

    def __str__(self) -> str:
        return f"{self.filename}: cannot be written: {self.reason}"


def _write_reason(e: OSError) -> str:
    """Why a write failed, in words, with the errno's name: ``read-only file system (errno EROFS)``."""
    words = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}
    name = errno.errorcode.get(e.errno, str(e.errno))
    return f"{words.get(e.errno) or (e.strerror or str(e)).lower()} (errno {name})"


def check_writable(path: str | os.PathLike, folder: bool | None = None) -> Path:
    """``path`` as a Path if fplib can write there, else :class:`NotWritableError` saying why; found
    without changing anything (not even a folder's time), before a job's work. A folder must let files
    be made in it (the kernel's own check, ``access(2)``, for this process: it knows read-only file
    systems, which even root cannot write, and access control lists); an existing file must open for
    writing (an SQLite database, a vector store appended to; replacing a file atomically needs its folder
    instead); a path not there yet is made in its nearest existing folder, which must be one and
    writable. With ``folder`` True, ``path`` must be (or become) a folder."""
    path = Path(path)
    place = path
    while not os.path.lexists(place) and place.parent != place:
        place = place.parent
    if place != path and not place.is_dir():
        raise NotWritableError(path, f"{place} is a file, not a folder", errno.ENOTDIR)
    try:
        if place.is_dir():
            if not os.access(place, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
                read_only = bool(os.statvfs(place).f_flag & os.ST_RDONLY)
                code = errno.EROFS if read_only else errno.EACCES
                raise OSError(code, os.strerror(code), str(place))
        elif folder:
            raise NotWritableError(path, "a file, not a folder", errno.ENOTDIR)
        else:
            os.close(os.open(place, os.O_WRONLY | os.O_NONBLOCK))  # opened, not changed (a FIFO: ENXIO)
    except NotWritableError:
        raise
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise NotWritableError(path, _write_reason(e), e.errno) from None
    return path


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# SQLite says "database or disk is full" (SQLITE_FULL) when it cannot grow the database or its journal
_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full")


def is_disk_full(err: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``err`` (or an exception it was raised from) says the disk is full. Libraries that
    report write errors without an errno (libsndfile, torch's zip writer) are judged by ``folder``'s
    file system: less than 1 MiB left counts as full."""
    seen = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS):
            return True
        if any(t in str(e).lower() for t in _DISK_FULL_TEXTS):
            return True
        e = e.__cause__ or e.__context__
    if folder is not None and isinstance(err, (OSError, RuntimeError)):  # an I/O error without an errno
        try:
            st = os.statvfs(folder)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < (1 << 20)
    return False


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


_HOST = _host_tag()
# .<stem>.<host>-<pid>.<random>.tmp<suffix>: what atomic_path creates (mkstemp's random part: 8 of [a-z0-9_])
_TEMP = re.compile(r"^\.(?P<stem>.*)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")
# what fplib's earlier versions created (no writer recorded)
_OLD_TEMP = re.compile(r"^\.(?P<stem>.*)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")
# a temporary file whose writer cannot be checked (another machine, an earlier version) is stale once
# untouched this long: a live writer keeps writing to it
OLD_TEMP_AGE_S = 24 * 3600.0


def temp_name(target: str | os.PathLike) -> tuple[str, str]:
    """The (prefix, suffix) of :func:`atomic_path`'s temporary files for ``target`` (mkstemp adds the middle)."""
    target = Path(target)
    return f".{target.stem}.{_HOST}-{os.getpid()}.", f".tmp{target.suffix}"


def this_process() -> list:
    """``[host tag, pid]`` of this process, as temporary files name their writer (for records of a job)."""
    return [_HOST, os.getpid()]


def running_elsewhere(writer) -> bool:
    """``writer`` (:func:`this_process` of some process) is another process of this machine that still runs."""
    try:
        host, pid = writer
    except (TypeError, ValueError):
        return False
    return host == _HOST and isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_path` (this version or earlier)."""
    name = Path(path).name
    return bool(_TEMP.match(name) or _OLD_TEMP.match(name))


def is_live_temp(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` whose writer may still be at work: never
    delete it (:func:`is_stale_temp` is not simply its negation: a file that is neither is left alone)."""
    path = Path(path)
    m = _TEMP.match(path.name)
    if not m:
        return False
    if m["host"] == _HOST:
        return _pid_alive(int(m["pid"]))
    return not _untouched_for(path, OLD_TEMP_AGE_S)


def is_stale_temp(path: str | os.PathLike, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` whose writer is gone: one written on this
    machine by a process that no longer runs; or one whose writer cannot be checked (another machine's, or
    an earlier fplib's, which recorded no writer) untouched for :data:`OLD_TEMP_AGE_S`. A file of a live
    writer of this machine is never stale."""
    path = Path(path)
    m = _TEMP.match(path.name)
    if m and m["host"] == _HOST:
        return not _pid_alive(int(m["pid"]))
    if m or _OLD_TEMP.match(path.name):
        return _untouched_for(path, OLD_TEMP_AGE_S, now)
    return False


def _untouched_for(path: Path, seconds: float, now: float | None = None) -> bool:
    try:
        return (now or time.time()) - path.stat().st_mtime > seconds
    except OSError:
        return False


def clean_stale_temps(*folders: str | os.PathLike) -> list[Path]:
    """Delete the stale temporary files (:func:`is_stale_temp`) directly in ``folders``; returns them.
    Long jobs call it on their own output folders when they start."""
    removed = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if (
                entry.name.startswith(".")
                and ".tmp" in entry.name
                and entry.is_file(follow_symlinks=False)
                and is_stale_temp(entry.path)
            ):
                try:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
                except FileNotFoundError:
                    pass
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success flush it to disk and rename it onto ``target``.

    The temporary name keeps the target's suffix so that writers which infer the format from the
    extension (soundfile, numpy) do the right thing. On error the temporary file is removed and the
    previous ``target`` (if any) is left untouched; a full disk raises :class:`DiskFullError`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_name(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(target) from e
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp_path
        _fsync(tmp_path)  # a file system that reports a full disk late (on flush) reports it here
        os.replace(tmp_path, target)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if not isinstance(e, DiskFullError) and isinstance(e, Exception) and is_disk_full(e, target.parent):
            raise DiskFullError(target) from e
        raise


@contextlib.contextmanager
def restored_on_failure(*paths: str | os.PathLike) -> Iterator[None]:
    """Keep the present version of each of ``paths`` that exists and, if the block fails (a full disk
    part-way through a set of files written one by one, such as an index's three), put every one back:
    files that belong together are then all new or all as they were. For files replaced by name, as
    :func:`atomic_path` does (not rewritten in place). The versions are kept as hard links
    (no space needed; a copy where the file system has none) named like temporary files of this process, so
    that a killed process's are cleaned up (:func:`clean_stale_temps`); removed when the block ends."""
    kept: list[tuple[Path, Path]] = []
    try:
        for p in map(Path, paths):
            if not p.is_file():
                continue
            prefix, suffix = temp_name(p)
            backup = p.with_name(f"{prefix}{os.urandom(6).hex()[:8]}{suffix}")
            try:
                os.link(p, backup)
            except OSError as e:
                if is_disk_full(e):
                    raise DiskFullError(p) from e
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                with atomic_path(backup) as tmp:  # a file system without hard links
                    shutil.copyfile(p, tmp)
            kept.append((p, backup))
        yield
    except BaseException:
        for p, backup in kept:
            with contextlib.suppress(OSError):
                os.replace(backup, p)
        raise
    finally:
        for _, backup in kept:
            with contextlib.suppress(OSError):
                backup.unlink(missing_ok=True)


def write_at(path: str | os.PathLike, offset: int, data: bytes) -> None:
    """Write ``data`` at byte ``offset`` of ``path`` (created if missing), cutting the file there first, and
    flush it to disk: appending to an array file whose committed length is recorded elsewhere (what lies
    past it, a killed writer's bytes, is replaced). A full disk raises :class:`DiskFullError`."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, offset)
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise


def _fsync(path: Path) -> None:
    if not path.exists():  # the writer removed or renamed it: its own business
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """Append one JSON record as a line and flush it to disk (a progress log that survives kills).

    A last line cut short by an earlier kill is cut off first, so that the new record starts a line
    of its own; if this append fails (a full disk, an interrupt) the file is cut back to what it was.
    """
    path = Path(path)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        size = f.seek(0, os.SEEK_END)
        keep = _complete_lines_size(path, size)
        try:
            if keep != size:
                f.truncate(keep)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except BaseException as e:
            with contextlib.suppress(OSError):
                f.truncate(keep)
            if isinstance(e, Exception) and is_disk_full(e):
                raise DiskFullError(path) from e
            raise


def _complete_lines_size(path: Path, size: int) -> int:
    """The length of ``path``'s first ``size`` bytes up to and including its last newline."""
    if size == 0:
        return 0
    with open(path, "rb") as f:
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            block = f.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                return pos - step + i + 1
            pos -= step
    return 0


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines log. A last line cut short by a kill (no newline at its end) is ignored, and so
    is any line that is not a JSON object (what an earlier version could leave after such a cut): the
    work it recorded is simply done again."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    lines.pop()  # after the last newline: empty, or a torn line
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
