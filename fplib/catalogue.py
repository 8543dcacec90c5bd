"""The reference catalogue: every song's fingerprints (one 128-d unit vector per 0.5 s) and its
metadata, in a folder::

    catalogue.sqlite   songs(id, name, path, duration, first_vector, n_vectors, checksum, added, row)
                       meta(key, value): front end, model, next free vector id, the vector store
                       row_checksums(id, dtype, sha256): each song's rows as stored, their SHA-256
                       (:meth:`Catalogue.check_rows`; missing in catalogues of older fplib versions)
                       copies(song, original, offset_s, score): near-identical songs (:mod:`fplib.copies`;
                       made on the first record in catalogues of older fplib versions)
    vectors.<gen>.bin  the vector store: every song's fingerprints in one contiguous raw array
                       ``[rows, width]`` (float32 or float16 [., D] unit
                       vectors, or for a model of binary kind its D-bit codes packed in uint8 [., D / 8],
                       :mod:`fplib.codes`); song ``s`` is rows ``s.row .. s.row + s.n_vectors - 1``

Vector ids are global and never reused: song ``s`` owns ``first_vector .. first_vector + n_vectors
- 1``, and window ``j`` of it starts at ``j * hop`` seconds (the mapping an index's ``NAME.json`` keeps). Songs can be
added and removed safely:

* **add** appends the song's rows at the end of the store (flushed to disk) and only then commits its
  row in the database together with the new row count, in one transaction; bytes past the committed
  rows (a killed addition's) are cut off by the next addition, so a killed extraction resumes where it
  stopped, and the checksum of the audio file prevents adding a song twice; an addition may **replace**
  a song (its new audio under the same name) in the same transaction. Which name a song gets, and what
  happens to a name or audio already there, is :class:`SongNames`' rule;
* **remove** deletes the song's database row; its rows in the store become dead (a tombstone) and are
  no longer reachable;
* **compact** (``fplib db compact``) copies the live rows into a new store file, then switches the
  database to it in one transaction: a kill at any point leaves the old or the new store, never a mix.
  It also converts the store's dtype (float32 <-> float16) and converts catalogues written by older
  fplib versions (one ``vectors/<id>.npy`` per song), which stay readable until then.

The store's dtype is a setting chosen when the catalogue is made (``store_dtype``): float32 keeps the
network's output exactly; float16 halves the disk and page cache the re-ranking touches. Its effect on
the hit rate is measured by ``benchmarks/bench_scale.py``.

This module is the store only: it runs no network. Computing fingerprints, and filling a catalogue
from audio files, is :mod:`fplib.extraction`; :func:`merge` copies songs between catalogues. (About
680 lines, over the project's 600: one class whose format, opening checks, transactions and
compaction rely on each other's invariants, and reads best in one place.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fplib import codes, storage
from fplib.checkpoints import same_model
from fplib.errors import BadFileError, Refused, check_file
from fplib.features import FrontEnd

SCHEMA = """
CREATE TABLE IF NOT EXISTS songs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    duration REAL NOT NULL,
    first_vector INTEGER NOT NULL UNIQUE,
    n_vectors INTEGER NOT NULL,
    checksum TEXT NOT NULL UNIQUE,
    added TEXT NOT NULL,
    row INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# near-identical songs (fplib.copies): song ``song`` is a copy of song ``original`` (the earlier one), its start
# ``offset_s`` into it, their aligned fingerprints ``score`` alike; made on the first record in older catalogues
COPIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    song INTEGER NOT NULL,
    original INTEGER NOT NULL,
    offset_s REAL NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (song, original)
);
"""
# the SHA-256 of each song's rows as written to the store (in the store's dtype), recorded when they are written
# (add, compact) and never deleted with the song (ids are not reused; a restored song keeps its rows); made on
# the first record in older catalogues
ROW_CHECKSUMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS row_checksums (id INTEGER PRIMARY KEY, dtype TEXT NOT NULL, sha256 TEXT NOT NULL)
"""
# opening a catalogue checks at most this many songs' rows, drawn at random, against their recorded checksums
# (all of a catalogue with no more), reading at most about OPEN_CHECK_ROWS rows (at least one song)
OPEN_CHECK_SONGS = 8
OPEN_CHECK_ROWS = 1 << 14
ROWS_DIFFER = "differ from the checksum recorded when they were stored"


@dataclass(frozen=True)
class Song:
    id: int
    name: str
    path: str
    duration: float  # s
    first_vector: int
    n_vectors: int
    checksum: str
    row: int | None = None  # where its fingerprints start in the vector store (None: an older catalogue)
    store: str | None = None  # the store file that row refers to (a compaction makes a new one)


class AlreadyInCatalogue(ValueError):
    """The audio being added is already in the catalogue (``song``), e.g. added meanwhile by another process."""

    def __init__(self, path: str | os.PathLike, song: Song):
        self.song = song
        super().__init__(f"{path}: its audio is already in the catalogue as song {song.id} {song.name!r}")


@dataclass(frozen=True)
class Copy:
    """Two songs of a catalogue that are the same recording (album and compilation copies: other bytes, the
    same fingerprints): song ``song`` (``name``) is a copy of the earlier song ``original`` (``original_name``);
    its start lies ``offset_s`` into the original, where their fingerprints are ``score`` alike (mean
    similarity over the windows they share). Found by :func:`fplib.copies.find_copies`."""

    song: int
    name: str
    original: int
    original_name: str
    offset_s: float
    score: float

    def line(self) -> str:
        """One line saying so, as the commands print it."""
        return (
            f"near-identical: {self.name!r} (song {self.song}) is a copy of {self.original_name!r} (song "
            f"{self.original}), starting at {self.offset_s:.1f} s in it, similarity {self.score:.2f}; "
            f"recognition answers either as one song"
        )


@dataclass
class RowCheck:
    """What :meth:`Catalogue.check_rows` found: the songs whose rows match their recorded checksum (``ok``),
    those whose rows do not (``damaged``: ``(song, what is wrong)``) and those with no checksum recorded
    (``unrecorded``: stored by an older fplib, or in another dtype before a compaction that was not this one's)."""

    ok: list[Song] = field(default_factory=list)
    damaged: list[tuple[Song, str]] = field(default_factory=list)
    unrecorded: list[Song] = field(default_factory=list)


SQLITE_HEADER = b"SQLite format 3\x00"
# how long a writer waits for another process's transaction on the same catalogue before giving up
BUSY_TIMEOUT_S = 120.0
SONG_COLUMNS = ("id", "name", "path", "duration", "first_vector", "n_vectors", "checksum", "added")
STORE_DTYPES = ("float32", "float16")  # the vector store of a float catalogue; binary codes are uint8
# rows copied at a time when compacting or building an index from the store
CHUNK_ROWS = 1 << 18
STORE_NAME = re.compile(r"vectors\.\d+\.bin")


class StaleCatalogueError(RuntimeError):
    """The catalogue was compacted after these songs were read: their rows refer to the previous store."""


class StoreRows:
    """Read-only rows of a vector store file, read with ``pread`` when asked for: ``rows[lo:hi]`` (a
    contiguous slice) or ``rows[ids]`` (any integer array), ``float16``/``float32``/``uint8 [..., width]``
    as stored.

    What the recogniser reads its candidates from. A memory map would do the same with less code, but
    every page it touches (with the kernel's fault-around, 64 KB of neighbours per touch) stays in the
    process's resident set, so a long-running recogniser's resident memory grows towards the store's
    size (12.8 GB at 5e7 float16 windows); here only what is read is held, for as long as it is used.
    The file stays open, so a compaction that deletes its name does not take the data away.

    ``rows[ids]`` goes through a cache of at most ``cache_bytes`` (default 16 MiB): blocks of
    ``BLOCK_ROWS`` consecutive rows, read whole, the oldest read replaced first. Sequence matching asks
    again and again for the rows just after the ones it last read (an alignment of a stream advances one
    database window a hop, in every query phase), so most requests are answered from memory, with one
    vectorised gather instead of a system call and a copy per run of rows; a 10-minute recording's
    segmentation made 364,000 reads without it (about 40 % of its time), 295 with it (its catalogue's
    10 MB fit in the cache). A request spanning more blocks than the cache holds is read directly (runs
    of rows at most ``MERGE_GAP`` apart in one read). ``cache_bytes=0`` turns the cache off."""

    MERGE_GAP = 32  # rows: runs of wanted rows this close are read in one go (uncached requests)
    BLOCK_ROWS = 64  # rows per cached block (32 KiB of float32 128-d rows)

    def __init__(self, path: str | os.PathLike, dtype: str, width: int, rows: int, cache_bytes: int = 16 << 20):
        self.path, self.dtype, self.shape = Path(path), np.dtype(dtype), (int(rows), int(width))
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd: int | None = os.open(self.path, os.O_RDONLY) if rows else None
        self.slots = max(0, int(cache_bytes) // (self.BLOCK_ROWS * max(1, self.row_bytes)))
        self._pool: np.ndarray | None = None  # [slots, BLOCK_ROWS, width], allocated on first use
        self._slot_of: dict[int, int] = {}  # block -> slot
        self._block_in = np.full(self.slots, -1, np.int64)  # slot -> block (-1: free)
        self._hand = 0  # the next slot to replace (the oldest read)
        self.reads = 0  # system calls made (for benchmarks)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi - 1`` (clipped to the store, like a slice), read from the file."""
        lo, hi = max(0, min(lo, len(self))), max(0, min(hi, len(self)))
        if hi <= lo:
            return np.zeros((0, self.shape[1]), self.dtype)
        n = (hi - lo) * self.row_bytes
        data = os.pread(self._fd, n, lo * self.row_bytes)
        self.reads += 1
        if len(data) != n:
            raise BadFileError(self.path, f"truncated: rows {lo} .. {hi - 1} of {len(self)} cannot be read")
        return np.frombuffer(data, self.dtype).reshape(hi - lo, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                raise IndexError("store rows are read by contiguous slices or integer arrays")
            return self.read(lo, hi)
        ids = np.asarray(key, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"rows {ids.min()} .. {ids.max()} are not all in the store's {len(self)}")
        if not ids.size:
            return np.zeros((*ids.shape, self.shape[1]), self.dtype)
        blocks, where = np.unique(ids // self.BLOCK_ROWS, return_inverse=True)
        if len(blocks) > self.slots:
            return self._read_runs(ids)
        slots = self._cached(blocks.tolist())
        return self._pool[slots[where.reshape(ids.shape)], ids % self.BLOCK_ROWS]

    def _cached(self, blocks: list[int]) -> np.ndarray:
        """The cache slots holding ``blocks`` (sorted, at most ``slots`` of them), reading those missing."""
        if self._pool is None:
            self._pool = np.zeros((self.slots, self.BLOCK_ROWS, self.shape[1]), self.dtype)
        get = self._slot_of.get
        slots = np.array([get(b, -1) for b in blocks], np.int64)
        missing = np.flatnonzero(slots < 0)
        if not missing.size:
            return slots
        pinned = np.zeros(self.slots, bool)
        pinned[slots[slots >= 0]] = True  # blocks this request needs stay
        for k in missing.tolist():
            while pinned[self._hand]:
                self._hand = (self._hand + 1) % self.slots
            s = self._hand
            self._hand = (self._hand + 1) % self.slots
            if self._block_in[s] >= 0:
                del self._slot_of[int(self._block_in[s])]
            self._block_in[s], self._slot_of[blocks[k]], slots[k], pinned[s] = blocks[k], s, s, True
        # consecutive missing blocks are read in one go
        run = np.r_[0, np.flatnonzero(np.diff([blocks[k] for k in missing.tolist()]) != 1) + 1, missing.size]
        for a, b in zip(run[:-1], run[1:]):
            first = blocks[int(missing[a])]
            data = self.read(first * self.BLOCK_ROWS, (first + b - a) * self.BLOCK_ROWS)
            for j, k in enumerate(missing[a:b].tolist()):
                part = data[j * self.BLOCK_ROWS : (j + 1) * self.BLOCK_ROWS]
                self._pool[slots[k], : len(part)] = part
        return slots

    def _read_runs(self, ids: np.ndarray) -> np.ndarray:
        """``rows[ids]`` read from the file, one read per group of rows at most ``MERGE_GAP`` apart."""
        wanted = np.unique(ids)
        # a few kilobytes read past cost less than a system call each
        cuts = np.flatnonzero(np.diff(wanted) > 1 + self.MERGE_GAP) + 1
        bounds = np.r_[0, cuts, wanted.size]
        got = np.empty((wanted.size, self.shape[1]), self.dtype)
        for a, b in zip(bounds[:-1], bounds[1:]):
            lo = int(wanted[a])
            got[a:b] = self.read(lo, int(wanted[b - 1]) + 1)[wanted[a:b] - lo]
        return got[np.searchsorted(wanted, ids)]

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None  # (no file if opening it failed)
        if fd is not None:
            os.close(fd)
        self._pool, self._slot_of = None, {}

    def __del__(self) -> None:
        self.close()


class Catalogue:
    """Open (or create) the catalogue in ``folder``. ``fe`` and ``model`` (a description such as the
    checkpoint's checksum) are required to create one and checked against an existing one (the model
    by its checksum only, :func:`same_model`).

    Opening an existing catalogue never creates or changes a file: ``catalogue.sqlite`` is checked first
    (a regular, readable, non-empty SQLite file that passes SQLite's ``quick_check``, with fplib's tables
    and settings), and anything else raises :class:`~fplib.errors.BadFileError` naming the file and the
    problem. A new catalogue appears complete or not at all (written aside, then linked into place).
    Several processes may add to one catalogue at once: each addition is one ``BEGIN IMMEDIATE``
    transaction (writers wait up to :data:`BUSY_TIMEOUT_S` for each other).

    ``store_dtype`` (``"float32"``, default, or ``"float16"``) is the vector store's dtype for a new
    catalogue of float fingerprints; given for an existing catalogue it must be the one it has.

    The vector store is checked on opening too: its size against the committed rows and their width, and
    (``check_rows``, default) the rows of up to :data:`OPEN_CHECK_SONGS` songs drawn at random (every song
    of a catalogue with no more; about :data:`OPEN_CHECK_ROWS` rows at most, 8 MiB of float32) against the
    SHA-256 recorded when they were written, so that a store whose songs' rows were swapped, or another
    catalogue's store of the same size, is refused (:class:`~fplib.errors.BadFileError` naming the store and
    the song) instead of answering for the wrong songs. That costs a few milliseconds (3 ms here for 8
    songs of 3 minutes, 1.4 MiB of float32, read and hashed; a cold disk adds its seeks); in a large
    catalogue a damage confined to a few songs is caught when they are drawn, and always by
    :meth:`check_rows` (``fplib db verify``). Songs stored by an older fplib have no checksum and are not
    checked (``fplib db compact`` records them)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        fe: FrontEnd | None = None,
        model: dict | None = None,
        store_dtype: str | None = None,
        check_rows: bool = True,
    ):
        self.folder = Path(folder)
        self.path = self.folder / "catalogue.sqlite"
        if self.folder.exists() and not self.folder.is_dir():
            raise BadFileError(self.folder, "is a file, not a catalogue folder")
        if not os.path.lexists(self.path):
            if fe is None:
                raise FileNotFoundError(
                    f"{self.folder}: no catalogue here (notebook 04_extract_fingerprints or "
                    f"generate_fingerprints makes one)"
                )
            self._create(fe, model, store_dtype)
        self.db = self._connect()
        try:
            self._open(fe, model)
            if store_dtype is not None and self.store_dtype != store_dtype:
                raise ValueError(
                    f"{self.folder}: the catalogue stores {self.store_dtype} fingerprints, not "
                    f"{store_dtype}; convert it: fplib db compact --catalogue {shlex.quote(str(self.folder))} "
                    f"--dtype {store_dtype}"
                )
            if check_rows:
                self._check_some_rows()
        except BaseException:
            self.db.close()
            raise
        self._map: tuple[int, np.ndarray, str] | None = None  # (rows, memory map, file) of the store: matrix()

    def _create(self, fe: FrontEnd, model: dict | None, store_dtype: str | None) -> None:
        """Write a new, empty catalogue aside and link it into place; if another process made one
        meanwhile, theirs is kept (and then opened and checked like any existing one)."""
        kind = (model or {}).get("kind", "float")
        dtype = "uint8" if kind == "binary" else (store_dtype or "float32")
        if kind != "binary" and dtype not in STORE_DTYPES:
            raise ValueError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
        store = {"file": "vectors.0.bin", "dtype": dtype, "width": None, "rows": 0, "dead": 0}
        storage.check_writable(self.folder, folder=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        prefix, suffix = storage.temp_name(self.path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=self.folder)
        except OSError as e:
            if storage.is_disk_full(e):
                raise storage.DiskFullError(self.path) from e
            raise
        os.close(fd)
        try:
            with contextlib.closing(sqlite3.connect(tmp)) as db:
                db.executescript(SCHEMA + COPIES_SCHEMA)
                with db:
                    for key, value in (
                        ("frontend", fe.to_dict()),
                        ("model", model or {}),
                        ("next_vector", 0),
                        ("store", store),
                    ):
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
            raise BadFileError(
                self.path,
                "empty file (0 bytes), not a catalogue database (left as it is; delete it "
                "to start a new catalogue here)",
            )
        check_file(self.path)
        with open(self.path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise BadFileError(
                self.path,
                "not an SQLite database (a catalogue.sqlite starts with 'SQLite format 3'"
                "); not an fplib catalogue, or overwritten",
            )
        uri = f"{self.path.absolute().as_uri()}?mode=rw"  # mode=rw: an existing file only
        # autocommit: transactions are explicit (BEGIN IMMEDIATE in _write), so a read-then-write is atomic
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)

    def _open(self, fe: FrontEnd | None, model: dict | None) -> None:
        try:
            self.db.execute("BEGIN")  # one snapshot: settings and store file checked together
        except sqlite3.DatabaseError as e:
            raise BadFileError(self.path, _sqlite_reason(e)) from None
        try:
            self._open_checked(fe, model)
        finally:
            self.db.commit()

    def _open_checked(self, fe: FrontEnd | None, model: dict | None) -> None:
        try:
            check = self.db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise BadFileError(
                    self.path,
                    f"corrupt SQLite database (quick_check: {check[0][0]}); restore it "
                    f"from a copy or extract the catalogue again",
                )
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in ("songs", "meta") if t not in tables]
            if missing:
                raise BadFileError(
                    self.path, f"an SQLite database, but not an fplib catalogue (no table {', '.join(missing)})"
                )
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(songs)")}
            if not set(SONG_COLUMNS) <= columns:
                raise BadFileError(
                    self.path, f"not an fplib catalogue: its songs table lacks {sorted(set(SONG_COLUMNS) - columns)}"
                )
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
        self.legacy = "row" not in columns  # made by an fplib before the vector store: one file per song
        if self.legacy:
            if n_songs and not (self.folder / "vectors").is_dir():
                raise BadFileError(
                    self.folder / "vectors",
                    f"missing: the fingerprints of the catalogue's {n_songs} songs are not there",
                )
        else:
            try:
                store = json.loads(meta["store"]) if "store" in meta else None
            except (json.JSONDecodeError, TypeError):
                store = meta["store"]
            self._check_store(store)
        if fe is not None and fe != self.fe:
            raise ValueError(
                f"{self.folder}: the catalogue was made with front end {self.fe.to_dict()}, not {fe.to_dict()}"
            )
        if model is not None and self.model and not same_model(model, self.model):
            raise ValueError(
                f"{self.folder}: the catalogue was made with model {self.model}, not {model}; "
                f"fingerprints of different models cannot be mixed"
            )

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """One read transaction (a consistent snapshot: a compaction cannot commit, and so cannot delete the
        store file, until it ends); nothing if one is already open."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.commit()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``), so that what it reads (the next free
        vector id, whether a checksum is there) cannot change before it writes; all or nothing.

        SQLite's own write errors become the project's: a full disk (``database or disk is full``, also
        when the journal cannot grow) :class:`~fplib.storage.DiskFullError`, a read-only database
        :class:`~fplib.storage.NotWritableError`, both naming ``catalogue.sqlite``. A rollback that fails
        in turn (SQLite may have rolled back already) never hides the first error."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.commit()
            except BaseException:
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.rollback()
                raise
        except sqlite3.OperationalError as e:
            if storage.is_disk_full(e):
                raise storage.DiskFullError(self.path) from e
            if "readonly" in str(e) or "read-only" in str(e):
                raise storage.NotWritableError(
                    self.path, f"SQLite: {e}", consequence="the change was not made"
                ) from None
            raise

    def _get(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def close(self) -> None:
        self.db.close()

    # -- reading -------------------------------------------------------------------------------
    def _columns(self) -> str:
        return "id, name, path, duration, first_vector, n_vectors, checksum" + ("" if self.legacy else ", row")

    def songs(self) -> list[Song]:
        with self._read():
            rows = self.db.execute(f"SELECT {self._columns()} FROM songs ORDER BY first_vector").fetchall()
            file = None if self.legacy else self.store["file"]
        return [Song(*r, store=file) for r in rows]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM songs").fetchone()[0]

    def song(self, song_id: int) -> Song:
        with self._read():
            r = self.db.execute(f"SELECT {self._columns()} FROM songs WHERE id = ?", (song_id,)).fetchone()
            file = None if self.legacy else self.store["file"]
        if r is None:
            raise KeyError(f"{self.folder}: no song with id {song_id}")
        return Song(*r, store=file)

    # -- the vector store ------------------------------------------------------------------------
    @property
    def store(self) -> dict:
        """The store's settings: ``file``, ``dtype``, ``width`` (values per row), ``rows`` (committed) and
        ``dead`` (rows of removed songs, freed by :meth:`compact`)."""
        return self._get("store")

    @property
    def store_dtype(self) -> str:
        """``float32``, ``float16`` or ``uint8`` (binary codes; also an older catalogue's per-song files)."""
        if self.legacy:
            return str(codes.stored_dtype(self.kind))
        return self.store["dtype"]

    def store_path(self, store: dict | None = None) -> Path:
        return self.folder / (store or self.store)["file"]

    def _check_store(self, store) -> None:
        """The store's settings are valid and its file holds at least the committed rows."""
        keys = ("file", "dtype", "width", "rows", "dead")
        if not isinstance(store, dict) or any(k not in store for k in keys):
            raise BadFileError(self.path, f"its 'store' setting is missing or incomplete ({store!r})")
        want = "uint8" if self.kind == "binary" else STORE_DTYPES
        if store["dtype"] not in want or Path(store["file"]).name != store["file"]:
            raise BadFileError(self.path, f"its 'store' setting is invalid ({store!r})")
        if store["rows"]:
            path = self.store_path(store)
            if not os.path.lexists(path):
                raise BadFileError(path, f"missing: the vector store of the catalogue ({store['rows']} rows)")
            check_file(path)
            need = store["rows"] * store["width"] * np.dtype(store["dtype"]).itemsize
            if os.path.getsize(path) < need:
                raise BadFileError(
                    path,
                    f"truncated: {os.path.getsize(path)} bytes, the catalogue's {store['rows']} "
                    f"rows of {store['width']} {store['dtype']} need {need}; restore it from a "
                    f"copy or extract the catalogue again",
                )

    # -- the checksums of the songs' rows ---------------------------------------------------------
    def _has_row_checksums(self) -> bool:
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'row_checksums'"
        return self.db.execute(exists).fetchone() is not None

    def _record_rows(self, song_id: int, data: bytes, dtype: str) -> None:
        """Inside a write transaction: the SHA-256 of song ``song_id``'s rows as written (``data``, ``dtype``)."""
        self.db.execute(ROW_CHECKSUMS_SCHEMA)
        self.db.execute(
            "INSERT OR REPLACE INTO row_checksums (id, dtype, sha256) VALUES (?, ?, ?)",
            (int(song_id), dtype, hashlib.sha256(data).hexdigest()),
        )

    def _recorded(self, dtype: str, song_ids: list[int] | None = None) -> dict[int, str]:
        """``{song id: SHA-256}`` of the rows recorded in ``dtype`` (of ``song_ids``; default all)."""
        if not self._has_row_checksums():
            return {}
        query = "SELECT id, sha256 FROM row_checksums WHERE dtype = ?"
        if song_ids is None:
            return dict(self.db.execute(query, (dtype,)).fetchall())
        got: dict[int, str] = {}
        for i in range(0, len(song_ids), 500):  # SQLite's limit on parameters
            part = song_ids[i : i + 500]
            got.update(self.db.execute(f"{query} AND id IN ({','.join('?' * len(part))})", (dtype, *part)))
        return got

    def check_rows(self, songs: list[Song] | None = None) -> RowCheck:
        """Read the rows of ``songs`` (default: every song) from the store and compare each song's with the
        SHA-256 recorded when they were written (what ``fplib db verify`` does for every song: one pass over
        the store, 1.4 s per GB here from the page cache, or as long as the disk takes to read it). Songs of
        an older catalogue's per-song files, or stored by an older fplib, have none (``unrecorded``)."""
        result = RowCheck()
        with self._read():
            if songs is None:
                songs = self.songs()
            if self.legacy:
                result.unrecorded = list(songs)
                return result
            store = self.store
            recorded = self._recorded(store["dtype"], None if len(songs) > 500 else [s.id for s in songs])
            result.unrecorded = [s for s in songs if s.id not in recorded]
            checked = [s for s in songs if s.id in recorded]
            if not checked:
                return result
            row_bytes = int(store["width"]) * np.dtype(store["dtype"]).itemsize
            with open(self.store_path(store), "rb") as f:
                for s in checked:
                    if s.store != store["file"] or s.row is None:
                        raise StaleCatalogueError(f"{self.folder}: compacted since song {s.id} {s.name!r} was read")
                    n = s.n_vectors * row_bytes
                    data = os.pread(f.fileno(), n, s.row * row_bytes)
                    if len(data) != n:
                        result.damaged.append((s, "cannot be read: the store is truncated"))
                    elif hashlib.sha256(data).hexdigest() != recorded[s.id]:
                        result.damaged.append((s, ROWS_DIFFER))
                    else:
                        result.ok.append(s)
        return result

    def _check_some_rows(self) -> None:
        """On opening: the rows of a few songs drawn at random against their checksums (:class:`Catalogue`)."""
        with self._read():
            if self.legacy or not self._has_row_checksums() or not self.store["rows"]:
                return
            n, lo, hi = self.db.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM songs").fetchone()
            rng, file = np.random.default_rng(), self.store["file"]

            def draws() -> Iterator[Song]:  # songs at random, found by their id: no scan of a large table
                if n <= OPEN_CHECK_SONGS:
                    every = self.songs()
                    yield from (every[i] for i in rng.permutation(len(every)))
                    return
                for _ in range(4 * OPEN_CHECK_SONGS):
                    query = f"SELECT {self._columns()} FROM songs WHERE id >= ? ORDER BY id LIMIT 1"
                    yield Song(*self.db.execute(query, (int(rng.integers(lo, hi + 1)),)).fetchone(), store=file)

            picked: dict[int, Song] = {}
            rows = 0
            for s in draws():
                if s.id in picked or (picked and rows + s.n_vectors > OPEN_CHECK_ROWS):
                    continue  # the first song drawn is checked whatever its length
                picked[s.id], rows = s, rows + s.n_vectors
                if len(picked) == OPEN_CHECK_SONGS:
                    break
            damaged = self.check_rows(sorted(picked.values(), key=lambda s: s.id)).damaged
            if damaged:
                s, reason = damaged[0]
                raise BadFileError(
                    self.store_path(),
                    f"the fingerprints of song {s.id} {s.name!r} (rows {s.row} .. {s.row + s.n_vectors - 1}) "
                    f"{reason}: the store is damaged, or another catalogue's; restore it from a copy or extract "
                    f"the catalogue again (fplib db verify --catalogue {self.folder} checks every song)",
                )

    def integrity_check(self) -> list[str]:
        """SQLite's ``integrity_check`` of ``catalogue.sqlite`` (``["ok"]``, or what is wrong): the thorough
        check, reading the whole database (opening runs the quicker ``quick_check``)."""
        return [r[0] for r in self.db.execute("PRAGMA integrity_check").fetchall()]

    def matrix(self) -> np.ndarray:
        """The vector store as a read-only array ``[rows, width]`` (memory-mapped, so only the rows that are
        read are loaded); song ``s``'s fingerprints are ``matrix()[s.row : s.row + s.n_vectors]``. An older
        catalogue's per-song files are read into memory instead (rows as in :meth:`rows_of`)."""
        if self.legacy:
            songs = self.songs()
            if not songs:
                return np.zeros((0, 0), codes.stored_dtype(self.kind))
            return np.concatenate([self.vectors(s) for s in songs])
        with self._read():  # the file named cannot be deleted by a compaction before it is mapped
            store = self.store
            if self._map is None or self._map[0] != store["rows"] or self._map[2] != store["file"]:
                if not store["rows"]:
                    m = np.zeros((0, store["width"] or 0), store["dtype"])
                else:
                    self._check_store(store)
                    m = np.memmap(
                        self.store_path(store), dtype=store["dtype"], mode="r", shape=(store["rows"], store["width"])
                    )
                self._map = (store["rows"], m, store["file"])
        return self._map[1]

    def snapshot(self) -> tuple[list[Song], StoreRows | np.ndarray]:
        """The songs and the store they index, read together: :meth:`songs` and the store's rows as a
        :class:`StoreRows` (read when asked for; an older catalogue's, in memory). A recogniser keeps
        reading this view: a later compaction deletes the file's name, not the open file's data."""
        with self._read():
            songs, store = self.songs(), self.store
            if self.legacy or not store["rows"]:
                return songs, self.matrix()
            self._check_store(store)
            return songs, StoreRows(self.store_path(store), store["dtype"], store["width"], store["rows"])

    def rows_of(self, songs: list[Song]) -> np.ndarray:
        """Where each of ``songs`` starts in :meth:`matrix` (``int64 [len(songs)]``)."""
        if self.legacy:  # matrix() concatenates every song in first_vector order
            every = self.songs()
            offsets = dict(zip((s.id for s in every), np.cumsum([0] + [s.n_vectors for s in every])))
            return np.array([offsets[s.id] for s in songs], np.int64)
        return np.array([s.row for s in songs], np.int64)

    def vectors(self, song: Song) -> np.ndarray:
        """Song ``song``'s fingerprints as :mod:`fplib.codes` compares them: ``float32 [n_vectors, D]``, or
        packed binary codes ``uint8 [n_vectors, D / 8]``; checked (:class:`BadFileError` if its file is
        missing, unreadable, of another shape or type, or not finite)."""
        if not self.legacy:
            m = self.matrix()
            if song.store != self._map[2]:
                raise StaleCatalogueError(
                    f"{self.folder}: compacted since song {song.id} {song.name!r} was read (its "
                    f"rows were in {song.store}, the store is now {self._map[2]}); open the "
                    f"catalogue again"
                )
            if song.row is None or song.row + song.n_vectors > len(m):
                raise BadFileError(
                    self.store_path(),
                    f"holds {len(m)} rows; song {song.id} {song.name!r} needs rows "
                    f"{song.row} .. {(song.row or 0) + song.n_vectors - 1}",
                )
            v = np.array(m[song.row : song.row + song.n_vectors], dtype=codes.stored_dtype(self.kind))
            if self.kind == "float" and not np.isfinite(v).all():
                raise BadFileError(
                    self.store_path(), f"the fingerprints of song {song.id} {song.name!r} contain NaN or infinity"
                )
            return v
        path = self.folder / "vectors" / f"{song.id}.npy"
        check_file(path)
        try:
            v = storage.load_array(path)
        except (OSError, ValueError, EOFError) as e:
            raise BadFileError(path, f"not a readable fingerprint array, truncated or corrupt ({e})") from None
        want = codes.stored_dtype(self.kind)
        if v.dtype != want or v.ndim != 2 or len(v) != song.n_vectors:
            raise BadFileError(
                path,
                f"holds {v.dtype} {list(v.shape)}, not the {want} [{song.n_vectors}, "
                f"{'D / 8' if self.kind == 'binary' else 'D'}] fingerprints of song {song.id} "
                f"{song.name!r}",
            )
        if self.kind == "float" and not np.isfinite(v).all():
            raise BadFileError(path, f"the fingerprints of song {song.id} {song.name!r} contain NaN or infinity")
        return v

    def all_vectors(self, songs: list[Song] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vector ids ``int64 [N]`` and fingerprints ``[N, .]`` of ``songs`` (default: all), as :meth:`vectors`
        returns them (in memory: for a large catalogue use :meth:`iter_vectors`)."""
        dtype = codes.stored_dtype(self.kind)
        chunks = list(self.iter_vectors(songs))
        if not chunks:
            return np.zeros(0, np.int64), np.zeros((0, 0), dtype)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """The fingerprints of ``n`` windows drawn at random from the live songs (all, in order, if there are
        no more than ``n``), as :meth:`vectors` returns them: an index's training set without reading the rest."""
        songs = self.songs()
        lengths = np.array([s.n_vectors for s in songs], np.int64)
        total = int(lengths.sum())
        pick = np.arange(total) if total <= n else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
        cum = np.concatenate([[0], np.cumsum(lengths)])
        si = np.searchsorted(cum, pick, side="right") - 1
        rows = self.rows_of(songs)[si] + (pick - cum[si])
        return np.asarray(self.matrix()[rows], dtype=codes.stored_dtype(self.kind))

    def iter_vectors(
        self, songs: list[Song] | None = None, chunk_rows: int = CHUNK_ROWS
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids int64 [n], fingerprints [n, .])`` of ``songs`` (default: all), about ``chunk_rows`` at a time."""
        songs = self.songs() if songs is None else songs
        batch: list[Song] = []
        n = 0
        for i, s in enumerate(songs):
            batch.append(s)
            n += s.n_vectors
            if n >= chunk_rows or i == len(songs) - 1:
                ids = np.concatenate([np.arange(b.first_vector, b.first_vector + b.n_vectors) for b in batch])
                yield ids.astype(np.int64), np.concatenate([self.vectors(b) for b in batch])
                batch, n = [], 0

    def state(self) -> str:
        """A digest of the catalogue's contents (songs and their vector ranges), to match an index to it."""
        h = hashlib.sha256()
        for s in self.songs():
            h.update(f"{s.id}:{s.first_vector}:{s.n_vectors}:{s.checksum};".encode())
        return h.hexdigest()

    # -- writing -------------------------------------------------------------------------------
    def add(
        self,
        path: str | os.PathLike,
        vectors: np.ndarray,
        duration: float,
        checksum: str,
        name: str | None = None,
        replace: int | None = None,
    ) -> Song:
        """Store one song's fingerprints (as :func:`fplib.extraction.fingerprint` returns them for the
        catalogue's kind of model); its row is committed only after its vectors are on disk. ``replace``: the
        id of a song this one replaces (its new audio under the same name), removed in the same transaction,
        so the catalogue has the old song or the new one, never both or neither.

        Names are not checked here: which name a song gets, and what happens to a name already there, is
        the callers' rule (:func:`song_plan`)."""
        vectors = np.asarray(vectors)
        want = codes.stored_dtype(self.kind)
        if vectors.ndim != 2 or (vectors.dtype != want and not (self.kind == "float" and vectors.dtype.kind == "f")):
            raise ValueError(
                f"{self.folder}: a catalogue of {self.kind} fingerprints stores {want} [N, .] arrays, "
                f"got {vectors.dtype} {list(vectors.shape)} for {path}"
            )
        if self.kind == "float" and not np.isfinite(vectors).all():
            raise ValueError(f"{path}: its fingerprints contain NaN or infinity; not added")
        self.require_store()
        with self._write():
            known = self.find_checksum(checksum)
            if known is not None:  # e.g. another process added the same audio meanwhile
                raise AlreadyInCatalogue(path, known)
            store = self.store
            if store["width"] is None:
                store["width"] = int(vectors.shape[1])
            if vectors.shape[1] != store["width"]:
                raise ValueError(
                    f"{path}: fingerprints of width {vectors.shape[1]}, the catalogue's are {store['width']} wide"
                )
            data = np.ascontiguousarray(vectors, dtype=store["dtype"])
            row = int(store["rows"])
            # past the committed rows: what a killed addition left is cut off and overwritten
            storage.write_at(self.store_path(store), row * data.itemsize * data.shape[1], data.tobytes())
            first = int(self._get("next_vector"))
            cur = self.db.execute(
                "INSERT INTO songs (name, path, duration, first_vector, n_vectors, checksum, added, row) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name or Path(path).stem,
                    str(path),
                    float(duration),
                    first,
                    len(vectors),
                    checksum,
                    _now(),
                    row,
                ),
            )
            song_id = cur.lastrowid
            self._record_rows(song_id, data.tobytes(), store["dtype"])
            store["rows"] = row + len(vectors)
            gone = self.db.execute("SELECT n_vectors FROM songs WHERE id = ?", (replace,)).fetchone()
            if replace is not None and gone is not None:  # (None: removed meanwhile)
                self.db.execute("DELETE FROM songs WHERE id = ?", (replace,))
                self._forget_copies([replace])
                store["dead"] += gone[0]
            self._set("store", store)
            self._set("next_vector", first + len(vectors))
        return self.song(song_id)

    def require_store(self) -> None:
        """ValueError, saying how to convert it, for a catalogue of an older fplib (songs cannot be added to it)."""
        if self.legacy:
            raise ValueError(
                f"{self.folder}: a catalogue made by an older fplib (one file per song); convert it "
                f"once, then add: fplib db compact --catalogue {shlex.quote(str(self.folder))}"
            )

    def require_writable(self) -> None:
        """:class:`~fplib.storage.NotWritableError` unless the catalogue can be changed: its folder (SQLite
        writes its journal beside the database; a compaction writes a new store there), ``catalogue.sqlite``
        and the vector store (appended to), and an older catalogue's per-song folder. Writers call it
        before their work."""
        storage.check_writable(self.folder, folder=True)
        storage.check_writable(self.path)
        if not self.legacy and os.path.lexists(self.store_path()):
            storage.check_writable(self.store_path())
        if self.legacy and (self.folder / "vectors").is_dir():
            storage.check_writable(self.folder / "vectors", folder=True)

    def remove(self, song_id: int) -> Song:
        """Remove a song (its vector ids are not reused)."""
        return self.remove_many([song_id])[0]

    def remove_many(self, song_ids: list[int]) -> list[Song]:
        """Remove songs in one transaction (all or none). Their rows in the store become dead until
        :meth:`compact` (an older catalogue's per-song files are deleted)."""
        if not song_ids:  # nothing to write (undoing an addition that added nothing, on a full disk too)
            return []
        with self._write():
            songs = [self.song(i) for i in dict.fromkeys(song_ids)]  # read under the lock: counted once
            self.db.executemany("DELETE FROM songs WHERE id = ?", [(s.id,) for s in songs])
            self._forget_copies([s.id for s in songs])
            if not self.legacy:
                store = self.store
                store["dead"] += sum(s.n_vectors for s in songs)
                self._set("store", store)
        if self.legacy:
            for i in song_ids:
                (self.folder / "vectors" / f"{i}.npy").unlink(missing_ok=True)
        return songs

    def restore(self, songs: list[Song]) -> None:
        """Undo the removal of ``songs`` (read before they were removed or replaced), in one transaction: their
        rows, still in the store until a compaction, are live again under the same ids (what a failed
        :func:`fplib.db.add` that replaced them does). ValueError if the store was compacted meanwhile."""
        if not songs:  # nothing to write (a failed addition that replaced none, on a full disk too)
            return
        with self._write():
            store = self.store
            for s in songs:
                if s.store != store["file"] or self.db.execute("SELECT 1 FROM songs WHERE id = ?", (s.id,)).fetchone():
                    raise ValueError(f"{self.folder}: song {s.id} {s.name!r} cannot be restored (compacted meanwhile)")
                self.db.execute(
                    "INSERT INTO songs (id, name, path, duration, first_vector, n_vectors, checksum, added, row) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (s.id, s.name, s.path, s.duration, s.first_vector, s.n_vectors, s.checksum, _now(), s.row),
                )
                store["dead"] -= s.n_vectors
            self._set("store", store)

    # -- near-identical songs (fplib.copies) ----------------------------------------------------
    def _has_copies(self) -> bool:
        exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'copies'"
        return self.db.execute(exists).fetchone() is not None

    def _forget_copies(self, song_ids: list[int]) -> None:
        """Inside a write transaction: the copies records of songs that are removed."""
        if song_ids and self._has_copies():
            self.db.executemany("DELETE FROM copies WHERE song = ? OR original = ?", [(i, i) for i in song_ids])

    def copies(self) -> list[Copy]:
        """The recorded pairs of near-identical songs (:class:`Copy`), of live songs, by song id."""
        with self._read():
            if not self._has_copies():
                return []
            rows = self.db.execute(
                "SELECT c.song, s.name, c.original, o.name, c.offset_s, c.score FROM copies c "
                "JOIN songs s ON s.id = c.song JOIN songs o ON o.id = c.original ORDER BY c.song, c.original"
            ).fetchall()
        return [Copy(*r) for r in rows]

    @property
    def copies_checked(self) -> int:
        """Songs whose ``first_vector`` is below this have been looked for copies (:func:`fplib.copies.find_copies`)."""
        return int(self._get("copies_checked") or 0)

    def record_copies(self, found: list[tuple[int, int, float, float]], checked: int) -> None:
        """Record pairs ``(song, original, offset_s, score)`` of near-identical songs (those of songs since
        removed are left out), and that the songs below vector id ``checked`` have been looked at; one
        transaction."""
        with self._write():
            self.db.execute(COPIES_SCHEMA.strip().rstrip(";"))
            live = {r[0] for r in self.db.execute("SELECT id FROM songs")}
            self.db.executemany(
                "INSERT OR REPLACE INTO copies (song, original, offset_s, score) VALUES (?, ?, ?, ?)",
                [(int(a), int(b), float(o), float(sc)) for a, b, o, sc in found if a in live and b in live],
            )
            self._set("copies_checked", max(checked, int(self._get("copies_checked") or 0)))

    def compact(self, dtype: str | None = None, progress: bool = False) -> dict:
        """Copy the live rows into a new store file (in ``first_vector`` order, as ``dtype``: default the
        store's own) and switch to it in one transaction, then delete the old file; converts a catalogue
        of an older fplib (per-song files) too. Other writers wait meanwhile (or give up after
        :data:`BUSY_TIMEOUT_S`); vector ids, and so the indexes, are unchanged. Returns the new settings."""
        old_dtype = self.store_dtype
        dtype = dtype or ("float32" if self.legacy and self.kind == "float" else old_dtype)
        if self.kind == "binary" and dtype != "uint8" or self.kind == "float" and dtype not in STORE_DTYPES:
            raise ValueError(f"{self.folder}: a store of {self.kind} fingerprints cannot be {dtype}")
        with self._write():
            self.legacy = was_legacy = self._is_legacy()  # another process may have converted it meanwhile
            songs = self.songs()
            if was_legacy:
                self.db.execute("ALTER TABLE songs ADD COLUMN row INTEGER")
                old = {"file": "vectors.0.bin", "rows": 0, "width": None, "dead": 0}
            else:
                old = self.store
            gen = int(old["file"].split(".")[1]) + 1 if not was_legacy else 0
            new = {"file": f"vectors.{gen}.bin", "dtype": dtype, "width": old["width"], "rows": 0, "dead": 0}
            self._clean_stores(keep=None if was_legacy else old["file"])  # under the lock: no compaction runs
            storage.clean_stale_temps(self.folder)  # a killed compaction's new store, as large as the store
            recorded = {} if was_legacy else self._recorded(old["dtype"])  # damaged rows are not copied as good
            self.db.execute(ROW_CHECKSUMS_SCHEMA)
            self.db.execute("DELETE FROM row_checksums")  # those of removed songs, and of the old dtype
            with storage.atomic_path(self.store_path(new)) as tmp, open(tmp, "wb") as f:
                for s in tqdm(songs, desc="compact", unit="song", disable=not progress):
                    v = self.vectors(s)
                    if s.id in recorded:
                        raw = np.ascontiguousarray(self.matrix()[s.row : s.row + s.n_vectors]).tobytes()
                        if hashlib.sha256(raw).hexdigest() != recorded[s.id]:
                            raise BadFileError(
                                self.store_path(old),
                                f"the fingerprints of song {s.id} {s.name!r} (rows {s.row} .. "
                                f"{s.row + s.n_vectors - 1}) {ROWS_DIFFER}; compacting would keep the damage, "
                                f"so nothing was changed: restore the store from a copy or extract the "
                                f"catalogue again",
                            )
                    new["width"] = v.shape[1]
                    data = np.ascontiguousarray(v, dtype=dtype).tobytes()
                    f.write(data)
                    self._record_rows(s.id, data, dtype)
                    self.db.execute("UPDATE songs SET row = ? WHERE id = ?", (new["rows"], s.id))
                    new["rows"] += s.n_vectors
            self._set("store", new)
        self.legacy, self._map = False, None
        if not was_legacy:  # only the file this compaction replaced: a later one may already have made another
            self.store_path(old).unlink(missing_ok=True)
        else:
            self._clean_legacy_files()
        return new

    def _is_legacy(self) -> bool:
        return "row" not in {r[1] for r in self.db.execute("PRAGMA table_info(songs)")}

    def _clean_stores(self, keep: str | None) -> None:
        """Delete store files other than ``keep`` (a killed compaction's), and the per-song files a
        conversion killed before deleting them left; only under the write lock."""
        for f in self.folder.iterdir():
            if STORE_NAME.fullmatch(f.name) and f.name != keep:
                f.unlink(missing_ok=True)
        if keep is not None:
            self._clean_legacy_files()

    def _clean_legacy_files(self) -> None:
        """An older fplib's per-song files, once the store holds their fingerprints."""
        folder = self.folder / "vectors"
        if folder.is_dir():
            for f in folder.iterdir():
                if re.fullmatch(r"\d+\.npy", f.name):
                    f.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def find_checksum(self, checksum: str) -> Song | None:
        r = self.db.execute("SELECT id FROM songs WHERE checksum = ?", (checksum,)).fetchone()
        return self.song(r[0]) if r else None


REPLACE_RULES = ("same_file", "always", "never")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two recorded paths name the same file (the same string, or the same file once resolved)."""
    return str(a) == str(b) or os.path.realpath(a) == os.path.realpath(b)


class SongNames:
    """The rule for names and audio when songs are added to a catalogue (``songs``: those there), kept up to
    date by :meth:`took` as songs are added.

    A song's name is the path of its file under the folder given, without the extension (``album/track``;
    the file's stem for a file given alone: :func:`fplib.extraction.song_name`): one song a name in a
    catalogue. Its audio is identified by the file's bytes (SHA-256). :meth:`plan` says what adding audio
    ``checksum`` under ``name`` does:

    * ``"unchanged"``: this audio is there under this name (a rerun, a resumed run): nothing to do;
    * ``"duplicate"``: this audio is there under another name (a copied file): not added, reported;
    * ``"add"``: a new name and new audio;
    * ``"replace"``: the name is there with other audio, and by ``replace`` the new audio replaces it:
      ``"same_file"`` when the song there came from the same file (the file was replaced, and the folder
      fingerprinted again), ``"always"`` whatever its file (``--replace``), ``"never"``;
    * ``"taken"``: the name is there with other audio and stays (another folder's song of the same name):
      not added, reported."""

    def __init__(self, songs: list[Song]):
        self.by_name: dict[str, Song] = {}
        self.by_checksum: dict[str, Song] = {}
        for s in songs:
            self.took(s)

    def plan(
        self, name: str, path: str | os.PathLike, checksum: str, replace: str = "same_file"
    ) -> tuple[str, Song | None]:
        """``(action, song)``: what adding this audio does (see the class), and the song there it concerns."""
        if replace not in REPLACE_RULES:
            raise ValueError(f"replace must be one of {REPLACE_RULES}, got {replace!r}")
        known = self.by_checksum.get(checksum)
        if known is not None:
            return ("unchanged" if known.name == name else "duplicate"), known
        there = self.by_name.get(name)
        if there is None:
            return "add", None
        if replace == "always" or (replace == "same_file" and same_file(there.path, path)):
            return "replace", there
        return "taken", there

    def took(self, song: Song, replaced: Song | None = None) -> None:
        """``song`` is now in the catalogue (instead of ``replaced``)."""
        if replaced is not None:
            self.by_checksum.pop(replaced.checksum, None)
            self.by_name[song.name] = song
        else:  # the first song of a name stays (a catalogue of an older fplib may hold several)
            self.by_name.setdefault(song.name, song)
        self.by_checksum[song.checksum] = song


@dataclass
class MergeResult:
    """What :func:`merge` did: songs ``added``, ``replaced`` (``(new, old)``), ``unchanged`` (already there
    under the same name: a resumed merge), ``duplicates`` (``(song not merged, song there)``: the same audio
    under another name) and ``taken`` (``(what, reason)``: a name there with other audio, not merged)."""

    added: list[Song] = field(default_factory=list)
    replaced: list[tuple[Song, Song]] = field(default_factory=list)
    unchanged: int = 0
    duplicates: list[tuple[Song, Song]] = field(default_factory=list)
    taken: list[tuple[str, str]] = field(default_factory=list)


def merge(
    target: Catalogue,
    shards: list[str | os.PathLike],
    order: list[str] | None = None,
    progress: bool = False,
    replace: str = "never",
) -> MergeResult:
    """Add every song of the catalogues ``shards`` (made by the same model and front end) to ``target``,
    in the order of their audio files in ``order`` where given (so vector ids are those one process
    extracting ``order`` would give), then any others shard by shard, under their names (:class:`SongNames`).
    Audio already there under the same name is left (so an interrupted merge resumes); under another name it
    is not added, and reported. A name already there (or in an earlier shard) with other audio: with
    ``replace="never"`` the whole merge is refused before anything changes (:class:`~fplib.errors.Refused`,
    listing them); ``"always"``: the last catalogue's song of that name replaces it; ``"same_file"``: replaced
    if it came from the same file, else not added and reported (what merging ``generate_fingerprints``'
    shards does)."""
    opened = [Catalogue(f) for f in shards]
    try:
        for c in opened:
            if c.fe != target.fe or not same_model(c.model, target.model):
                raise ValueError(f"{c.folder}: made with another model or front end than {target.folder}")
        songs = [(c, s) for c in opened for s in c.songs()]  # shard by shard; two shards may share a path
        rank = {str(p): i for i, p in enumerate(order or ())}
        songs.sort(key=lambda cs: rank.get(cs[1].path, len(rank)))  # stable: the others keep their order
        if replace == "always":  # the last catalogue's song of a name is the one merged, not each in turn
            last = {s.name: k for k, (_, s) in enumerate(songs)}
            songs = [cs for k, cs in enumerate(songs) if last[cs[1].name] == k]
        there = target.songs()
        if replace == "never":  # refused before anything changes
            names, where, problems = SongNames(there), {s.name: target.folder for s in there}, []
            for c, s in songs:
                action, old = names.plan(s.name, s.path, s.checksum, "never")
                if action == "taken":
                    problems.append(
                        (
                            f"{c.folder}: {s.name!r}",
                            f"a song named {s.name!r} is already in {where[s.name]}, with other audio "
                            f"(--replace: {c.folder}'s replaces it)",
                        )
                    )
                elif action == "add":
                    names.took(s)
                    where[s.name] = c.folder
            if problems:
                raise Refused(problems, "nothing was merged")
        names, result = SongNames(there), MergeResult()
        for c, s in tqdm(songs, desc="merge", unit="song", disable=not progress):
            action, old = names.plan(s.name, s.path, s.checksum, replace)
            if action == "unchanged":
                result.unchanged += 1
            elif action == "duplicate":
                result.duplicates.append((s, old))
            elif action == "taken":
                result.taken.append(
                    (f"{c.folder}: {s.name!r}", f"a song named {s.name!r} is already there, from {old.path}")
                )
            else:
                new = target.add(s.path, c.vectors(s), s.duration, s.checksum, s.name, old.id if old else None)
                names.took(new, old)
                if old is None:
                    result.added.append(new)
                else:
                    result.replaced.append((new, old))
        return result
    finally:
        for c in opened:
            c.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


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
