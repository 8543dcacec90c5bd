"""The project's errors, and the checks made before a user-supplied file is opened.

What a library function raises says what happened; :mod:`fplib.cli` maps each kind to an exit code in
one place (``fplib.cli.exit_code``), so a user of the library sees the same errors as the commands:

* :class:`BadFileError` (a ``ValueError``): one input file cannot be used (exit 2).
* :class:`Refused` (a ``ValueError``): problems found before anything changed, each named (exit 2).
* :class:`PartlyDone`: some of the work failed, each failure named; what the message says was done or
  kept is kept (exit 1). ``fplib.storage.DiskFullError`` (exit 1) and ``fplib.data.NoUsableFiles``
  (exit 1) are the others of that kind.

Bad input files: one exception for every loader of a user-supplied file (audio, checkpoint,
catalogue, index, threshold, JSON), and the checks made before any of them is opened.

:class:`BadFileError` ``(path, reason)`` reads ``"PATH: reason"``; the commands print it as
``error: PATH: reason``. It is a ``ValueError``, so code that catches bad input keeps working.
:func:`file_problem` says why a path cannot be read as a regular file without opening it: opening a
named pipe (FIFO) named like a song would block forever, and a folder or a device is not a file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any


class BadFileError(ValueError):
    """A file that cannot be used for what it was given for; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class Refused(ValueError):
    """Problems found in the input before anything was changed: ``problems`` is ``[(what, reason)]`` (a
    path, a song name...), ``consequence`` what that means (``"nothing was added"``)."""

    def __init__(self, problems: list[tuple[str, str]], consequence: str = "nothing was done"):
        self.problems, self.consequence = list(problems), consequence
        super().__init__("; ".join(f"{w}: {r}" for w, r in self.problems) + f"; {consequence}")


class PartlyDone(RuntimeError):
    """Some of the work failed (``failures``: ``[(what, reason)]``); ``message`` says what was kept or undone."""

    def __init__(self, message: str, failures: list[tuple[str, str]] = ()):
        self.message, self.failures = message, list(failures)
        super().__init__(message + "".join(f"\n  {w}: {r}" for w, r in self.failures))


def file_problem(path: str | os.PathLike, allow_empty: bool = False) -> str | None:
    """Why ``path`` cannot be read as a regular file (None if it can), found without opening it:
    missing, a folder, a named pipe, socket or device, unreadable, or (unless ``allow_empty``) empty."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found" if not os.path.islink(path) else "broken symbolic link (its target is missing)"
    except PermissionError:
        return "permission denied (cannot reach the file)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(st.st_mode):
        return "is a named pipe (FIFO), not a regular file; not read (reading it could wait forever)"
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        return f"is {kind}, not a regular file; not read"
    if not os.access(path, os.R_OK):
        return "permission denied (the file is not readable)"
    if st.st_size == 0 and not allow_empty:
        return "empty file (0 bytes)"
    return None


def check_file(path: str | os.PathLike, allow_empty: bool = False) -> Path:
    """``path`` as a Path if it is a readable regular file, else :class:`BadFileError` saying why."""
    problem = file_problem(path, allow_empty)
    if problem:
        raise BadFileError(path, problem)
    return Path(path)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The content of a JSON file; :class:`BadFileError` if it is not a readable file of valid UTF-8 JSON
    (``what`` names the file's role in the message)."""
    check_file(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadFileError(path, f"not a {what}: not UTF-8 text") from None
    except OSError as e:
        raise BadFileError(path, f"cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadFileError(
            path, f"not a valid {what}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
