"""The reference catalogue: every song's fingerprints (one 128-d unit vector per 0.5 s) and its
metadata, in a folder::

    catalogue.sqlite   songs(id, name, path, duration, first_vector, n_vectors, checksum, added)
                       meta(key, value): front end, model, next free vector id
    vectors/<id>.npy   the fingerprints of song <id>: float32 [n_vectors, D] unit vectors, or for a model
                       of binary kind its D-bit codes packed in uint8 [n_vectors, D / 8] (fplib.codes)

Vector ids are global and never reused: song ``s`` owns ``first_vector .. first_vector + n_vectors
- 1``, and window ``j`` of it starts at ``j * hop`` seconds (the original scripts' mapping). Songs can be added and
removed safely: a song's vectors are written (atomically) before its row is committed, so a killed
extraction resumes where it stopped, and the checksum of the audio file prevents adding a song twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fplib import audio, codes, engine, storage
from fplib.checkpoints import load_model, model_description, same_model  # noqa: F401  (re-exported)
from fplib.errors import BadFileError, check_file, file_problem
from fplib.features import FrontEnd, logmel
from fplib.models import kind_of_model
from fplib.storage import file_checksum  # noqa: F401  (part of this module's interface)

SCHEMA = """
CREATE TABLE IF NOT EXISTS songs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    duration REAL NOT NULL,
    first_vector INTEGER NOT NULL UNIQUE,
    n_vectors INTEGER NOT NULL,
    checksum TEXT NOT NULL UNIQUE,
    added TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Song:
    id: int
    name: str
    path: str
    duration: float  # s
    first_vector: int
    n_vectors: int
    checksum: str


class AlreadyInCatalogue(ValueError):
    """The audio being added is already in the catalogue (``song``), e.g. added meanwhile by another process."""

    def __init__(self, path: str | os.PathLike, song: Song):
        self.song = song
        super().__init__(f"{path}: its audio is already in the catalogue as song {song.id} {song.name!r}")


SQLITE_HEADER = b"SQLite format 3\x00"
# how long a writer waits for another process's transaction on the same catalogue before giving up
BUSY_TIMEOUT_S = 120.0
SONG_COLUMNS = ("id", "name", "path", "duration", "first_vector", "n_vectors", "checksum", "added")


class Catalogue:
    """Open (or create) the catalogue in ``folder``. ``fe`` and ``model`` (a description such as the
    checkpoint's checksum) are required to create one and checked against an existing one (the model
    by its checksum only, :func:`same_model`).

    Opening an existing catalogue never creates or changes a file: ``catalogue.sqlite`` is checked first
    (a regular, readable, non-empty SQLite file that passes SQLite's ``quick_check``, with fplib's tables
    and settings), and anything else raises :class:`~fplib.errors.BadFileError` naming the file and the
    problem. A new catalogue appears complete or not at all (written aside, then linked into place).
    Several processes may add to one catalogue at once: each addition is one ``BEGIN IMMEDIATE``
    transaction (writers wait up to :data:`BUSY_TIMEOUT_S` for each other)."""

    def __init__(self, folder: str | os.PathLike, fe: FrontEnd | None = None, model: dict | None = None):
        self.folder = Path(folder)
        self.path = self.folder / "catalogue.sqlite"
        if self.folder.exists() and not self.folder.is_dir():
            raise BadFileError(self.folder, "is a file, not a catalogue folder")
        if not os.path.lexists(self.path):
            if fe is None:
                raise FileNotFoundError(f"{self.folder}: no catalogue here (notebook 04_extract_fingerprints or "
                                        f"generate_fingerprints makes one)")
            self._create(fe, model)
        self.db = self._connect()
        try:
            self._open(fe, model)
        except BaseException:
            self.db.close()
            raise

    def _create(self, fe: FrontEnd, model: dict | None) -> None:
        """Write a new, empty catalogue aside and link it into place; if another process made one
        meanwhile, theirs is kept (and then opened and checked like any existing one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "vectors").mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalogue.", suffix=".sqlite.tmp", dir=self.folder)
        os.close(fd)
        try:
            with contextlib.closing(sqlite3.connect(tmp)) as db:
                db.executescript(SCHEMA)
                with db:
                    for key, value in (("frontend", fe.to_dict()), ("model", model or {}), ("next_vector", 0)):
                        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))
            os.chmod(tmp, 0o666 & ~_umask())
            try:
                os.link(tmp, self.path)  # fails if the name exists: never replaces a catalogue
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                if not os.path.lexists(self.path):
                    os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        """A connection to the existing ``catalogue.sqlite`` (never created here), after checking it is one."""
        if os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
            raise BadFileError(self.path, "empty file (0 bytes), not a catalogue database (left as it is; delete it "
                                          "to start a new catalogue here)")
        check_file(self.path)
        with open(self.path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise BadFileError(self.path, "not an SQLite database (a catalogue.sqlite starts with 'SQLite format 3'"
                                          "); not an fplib catalogue, or overwritten")
        uri = f"{self.path.absolute().as_uri()}?mode=rw"  # mode=rw: an existing file only
        # autocommit: transactions are explicit (BEGIN IMMEDIATE in _write), so a read-then-write is atomic
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)

    def _open(self, fe: FrontEnd | None, model: dict | None) -> None:
        try:
            check = self.db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise BadFileError(self.path, f"corrupt SQLite database (quick_check: {check[0][0]}); restore it "
                                              f"from a copy or extract the catalogue again")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in ("songs", "meta") if t not in tables]
            if missing:
                raise BadFileError(self.path, f"an SQLite database, but not an fplib catalogue (no table "
                                              f"{', '.join(missing)})")
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(songs)")}
            if not set(SONG_COLUMNS) <= columns:
                raise BadFileError(self.path, f"not an fplib catalogue: its songs table lacks "
                                              f"{sorted(set(SONG_COLUMNS) - columns)}")
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            n_songs = self.db.execute("SELECT COUNT(*) FROM songs").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise BadFileError(self.path, _sqlite_reason(e)) from None
        settings = {}
        for key in ("frontend", "model", "next_vector"):
            if key not in meta:
                raise BadFileError(self.path, f"not a complete fplib catalogue: no {key!r} setting in its meta table")
            try:
                settings[key] = json.loads(meta[key])
            except (json.JSONDecodeError, TypeError):
                raise BadFileError(self.path, f"its {key!r} setting is not valid JSON: {meta[key]!r}") from None
        try:
            self.fe = FrontEnd(**settings["frontend"])
        except (TypeError, ValueError) as e:
            raise BadFileError(self.path, f"its front-end setting is invalid ({e})") from None
        self.model = settings["model"]
        if not isinstance(self.model, dict) or not isinstance(settings["next_vector"], int):
            raise BadFileError(self.path, "its 'model' or 'next_vector' setting is invalid")
        self.kind = self.model.get("kind", "float")  # catalogues made before binary fingerprints hold floats
        if self.kind not in codes.KINDS:
            raise BadFileError(self.path, f"its model's fingerprint kind {self.kind!r} is not one of {codes.KINDS}")
        if n_songs and not (self.folder / "vectors").is_dir():
            raise BadFileError(self.folder / "vectors", f"missing: the fingerprints of the catalogue's {n_songs} "
                                                        f"songs are not there")
        if fe is not None and fe != self.fe:
            raise ValueError(f"{self.folder}: the catalogue was made with front end {self.fe.to_dict()}, "
                             f"not {fe.to_dict()}")
        if model is not None and self.model and not same_model(model, self.model):
            raise ValueError(f"{self.folder}: the catalogue was made with model {self.model}, not {model}; "
                             f"fingerprints of different models cannot be mixed")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``), so that what it reads (the next free
        vector id, whether a checksum is there) cannot change before it writes; all or nothing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:
                self.db.rollback()
            raise
        self.db.commit()

    def _get(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def close(self) -> None:
        self.db.close()

    # -- reading -------------------------------------------------------------------------------
    def songs(self) -> list[Song]:
        rows = self.db.execute("SELECT id, name, path, duration, first_vector, n_vectors, checksum FROM songs "
                               "ORDER BY first_vector").fetchall()
        return [Song(*r) for r in rows]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM songs").fetchone()[0]

    def song(self, song_id: int) -> Song:
        r = self.db.execute("SELECT id, name, path, duration, first_vector, n_vectors, checksum FROM songs "
                            "WHERE id = ?", (song_id,)).fetchone()
        if r is None:
            raise KeyError(f"{self.folder}: no song with id {song_id}")
        return Song(*r)

    def vectors(self, song: Song) -> np.ndarray:
        """Song ``song``'s fingerprints as stored (:mod:`fplib.codes`): ``float32 [n_vectors, D]``, or packed
        binary codes ``uint8 [n_vectors, D / 8]``; checked (:class:`BadFileError` if its file is missing,
        unreadable, of another shape or type, or not finite)."""
        path = self.folder / "vectors" / f"{song.id}.npy"
        check_file(path)
        try:
            v = storage.load_array(path)
        except (OSError, ValueError, EOFError) as e:
            raise BadFileError(path, f"not a readable fingerprint array, truncated or corrupt ({e})") from None
        want = codes.stored_dtype(self.kind)
        if v.dtype != want or v.ndim != 2 or len(v) != song.n_vectors:
            raise BadFileError(path, f"holds {v.dtype} {list(v.shape)}, not the {want} [{song.n_vectors}, "
                                     f"{'D / 8' if self.kind == 'binary' else 'D'}] fingerprints of song {song.id} "
                                     f"{song.name!r}")
        if self.kind == "float" and not np.isfinite(v).all():
            raise BadFileError(path, f"the fingerprints of song {song.id} {song.name!r} contain NaN or infinity")
        return v

    def all_vectors(self, songs: list[Song] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vector ids ``int64 [N]`` and fingerprints ``[N, .]`` of ``songs`` (default: all), as stored."""
        songs = self.songs() if songs is None else songs
        dtype = codes.stored_dtype(self.kind)
        if not songs:
            return np.zeros(0, np.int64), np.zeros((0, 0), dtype)
        ids = np.concatenate([np.arange(s.first_vector, s.first_vector + s.n_vectors) for s in songs])
        return ids.astype(np.int64), np.concatenate([self.vectors(s) for s in songs]).astype(dtype)

    def state(self) -> str:
        """A digest of the catalogue's contents (songs and their vector ranges), to match an index to it."""
        h = hashlib.sha256()
        for s in self.songs():
            h.update(f"{s.id}:{s.first_vector}:{s.n_vectors}:{s.checksum};".encode())
        return h.hexdigest()

    # -- writing -------------------------------------------------------------------------------
    def add(self, path: str | os.PathLike, vectors: np.ndarray, duration: float, checksum: str,
            name: str | None = None) -> Song:
        """Store one song's fingerprints (as :func:`fingerprint` returns them for the catalogue's kind of
        model); its row is committed only after its vectors are on disk."""
        vectors = np.asarray(vectors)
        want = codes.stored_dtype(self.kind)
        if vectors.ndim != 2 or (vectors.dtype != want and not (self.kind == "float" and vectors.dtype.kind == "f")):
            raise ValueError(f"{self.folder}: a catalogue of {self.kind} fingerprints stores {want} [N, .] arrays, "
                             f"got {vectors.dtype} {list(vectors.shape)} for {path}")
        vectors = np.ascontiguousarray(vectors, dtype=want)
        (self.folder / "vectors").mkdir(exist_ok=True)
        with self._write():
            known = self.find_checksum(checksum)
            if known is not None:  # e.g. another process added the same audio meanwhile
                raise AlreadyInCatalogue(path, known)
            first = int(self._get("next_vector"))
            cur = self.db.execute(
                "INSERT INTO songs (name, path, duration, first_vector, n_vectors, checksum, added) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name or Path(path).stem, str(path), float(duration), first, len(vectors), checksum,
                 time.strftime("%Y-%m-%dT%H:%M:%S")))
            song_id = cur.lastrowid
            storage.save_array(self.folder / "vectors" / f"{song_id}.npy", vectors)  # before the commit
            self._set("next_vector", first + len(vectors))
        return self.song(song_id)

    def remove(self, song_id: int) -> Song:
        """Remove a song (its vector ids are not reused)."""
        return self.remove_many([song_id])[0]

    def remove_many(self, song_ids: list[int]) -> list[Song]:
        """Remove songs in one transaction (all or none); then delete their vector files."""
        songs = [self.song(i) for i in song_ids]
        with self._write():
            self.db.executemany("DELETE FROM songs WHERE id = ?", [(i,) for i in song_ids])
        for i in song_ids:
            (self.folder / "vectors" / f"{i}.npy").unlink(missing_ok=True)
        return songs

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def find_checksum(self, checksum: str) -> Song | None:
        r = self.db.execute("SELECT id FROM songs WHERE checksum = ?", (checksum,)).fetchone()
        return self.song(r[0]) if r else None


def fingerprint(wav: np.ndarray | torch.Tensor, model: torch.nn.Module, fe: FrontEnd, batch: int = 256,
                device: str | torch.device = "cpu") -> np.ndarray:
    """A signal ``float32 [T]`` at ``fe.sr`` -> the fingerprints of its windows every ``fe.hop_s``, as stored
    for the model's kind (:mod:`fplib.codes`): ``float32 [N, D]`` unit vectors, or binary codes packed
    ``uint8 [N, D / 8]`` (front end and model batched on ``device``; on CPU the network runs in ONNX
    Runtime, see :mod:`fplib.engine`)."""
    feats = logmel(torch.as_tensor(wav), fe, device=device)
    run = engine.runner(model, feats[:1])
    out = []
    with torch.inference_mode():
        for i in range(0, feats.shape[0], batch):
            out.append(run(feats[i : i + batch]).float().cpu())
    return codes.encode(torch.cat(out), kind_of_model(model))


@dataclass
class ExtractResult:
    added: list[Song]
    already: list[str]  # files whose audio was already in the catalogue
    skipped: list[tuple[str, str]]  # (file, reason)


def song_name(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """A song's catalogue name: its path under ``root`` without the extension (``album/track``), or
    the file's stem when there is no ``root`` or the file is not under it."""
    path = Path(path)
    if root is not None:
        for p, r in ((path, Path(root)), (path.absolute(), Path(root).absolute()),
                     (path.resolve(), Path(root).resolve())):
            if p.is_relative_to(r):
                return str(p.relative_to(r).with_suffix(""))
    return path.stem


class _Decoded(torch.utils.data.Dataset):
    """Song ``i`` of ``files`` read, checksummed and decoded to ``fe.sr`` (in a DataLoader worker):
    ``(i, "ok", (checksum, wav))``, ``(i, "already", checksum)`` for audio in ``known`` (not decoded),
    or ``(i, "skipped", (path, reason))``."""

    def __init__(self, files: list[Path], fe: FrontEnd, known: set[str]):
        self.files, self.fe, self.known = files, fe, known

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple:
        f = self.files[i]
        problem = file_problem(f)  # before reading: a named pipe would block forever
        if problem:
            return i, "skipped", (str(f), problem)
        try:
            checksum = file_checksum(f)
        except OSError as e:
            return i, "skipped", (str(f), f"cannot read: {e.strerror}")
        if checksum in self.known:
            return i, "already", checksum
        try:
            wav = audio.load(f, self.fe.sr, min_duration=self.fe.win_s)
        except audio.AudioError as e:
            return i, "skipped", (e.path, e.reason)
        return i, "ok", (checksum, torch.from_numpy(wav))


def _as_is(item):
    return item


def extract(files: Iterable[str | os.PathLike], catalogue: Catalogue, model: torch.nn.Module,
            device: str | torch.device = "cpu", batch: int = 256, progress: bool = True,
            root: str | os.PathLike | None = None, workers: int | None = None,
            names: dict[str, str] | None = None) -> ExtractResult:
    """Fingerprint ``files`` into ``catalogue`` (already present audio is skipped, so an interrupted run
    resumes). Unreadable or sub-window songs are skipped and reported. Names: :func:`song_name`, or
    ``names[str(file)]`` where given (e.g. another catalogue's names for the same files, to compare
    models on the same songs under the same names).

    Songs are read and decoded by ``workers`` DataLoader worker processes (default: 1 where the
    machine has more than one core and there is more than one file) while this process runs the
    front end and the network on the songs before them; songs are added in the order of ``files``,
    each in its own transaction, so the catalogue is the same with or without workers."""
    fe = catalogue.fe
    if kind_of_model(model) != catalogue.kind:
        raise ValueError(f"{catalogue.folder}: a catalogue of {catalogue.kind} fingerprints; this model makes "
                         f"{kind_of_model(model)} ones")
    model = model.to(device).eval()
    result = ExtractResult([], [], [])
    files = [Path(f) for f in files]
    storage.clean_stale_temps(catalogue.folder, catalogue.folder / "vectors")  # left by a killed run
    if workers is None:
        workers = 1 if len(files) > 1 and (os.cpu_count() or 1) > 1 else 0
    known = {r[0] for r in catalogue.db.execute("SELECT checksum FROM songs")}
    loader = torch.utils.data.DataLoader(_Decoded(files, fe, known), batch_size=None, num_workers=workers,
                                         collate_fn=_as_is, prefetch_factor=2 if workers else None)
    threads = torch.get_num_threads()
    try:
        # the decoding workers take a core each: fewer threads here than the network would otherwise
        # use, so that no operator waits for a thread the decoder has preempted
        if workers and str(device) == "cpu":
            torch.set_num_threads(max(1, threads - workers))
        _extract_loop(loader, files, catalogue, model, fe, batch, device, root, result, progress, names or {})
    finally:
        torch.set_num_threads(threads)
    return result


def _extract_loop(loader, files, catalogue, model, fe, batch, device, root, result, progress, names) -> None:
    for i, status, payload in tqdm(loader, total=len(files), desc="fingerprints", unit="song",
                                   disable=not progress):
        f = files[i]
        if status == "skipped":
            result.skipped.append(payload)
            continue
        checksum = payload if status == "already" else payload[0]
        if status == "already" or catalogue.find_checksum(checksum):
            result.already.append(str(f))
            continue
        wav = payload[1].numpy()
        vectors = fingerprint(wav, model, fe, batch, device)
        try:
            name = names.get(str(f)) or song_name(f, root)
            result.added.append(catalogue.add(f, vectors, len(wav) / fe.sr, checksum, name))
        except AlreadyInCatalogue:  # added meanwhile by another process
            result.already.append(str(f))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sqlite_reason(e: sqlite3.DatabaseError) -> str:
    msg = str(e)
    if "locked" in msg or "busy" in msg:
        return f"busy: another process has held it locked for more than {BUSY_TIMEOUT_S:.0f} s ({msg})"
    if "not a database" in msg or "malformed" in msg:
        return f"truncated or corrupt SQLite database ({msg}); restore it from a copy or extract the catalogue again"
    return f"not a readable catalogue database (SQLite: {msg})"
