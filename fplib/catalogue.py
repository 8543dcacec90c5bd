"""The reference catalogue: every song's fingerprints (one 128-d unit vector per 0.5 s) and its
metadata, in a folder::

    catalogue.sqlite   songs(id, name, path, duration, first_vector, n_vectors, checksum, added)
                       meta(key, value): front end, model, next free vector id
    vectors/<id>.npy   float32 [n_vectors, 128] of song <id>

Vector ids are global and never reused: song ``s`` owns ``first_vector .. first_vector + n_vectors
- 1``, and window ``j`` of it starts at ``j * hop`` seconds (the original scripts' mapping). Songs can be added and
removed safely: a song's vectors are written (atomically) before its row is committed, so a killed
extraction resumes where it stopped, and the checksum of the audio file prevents adding a song twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fplib import audio, storage
from fplib.features import FrontEnd, logmel
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


class Catalogue:
    """Open (or create) the catalogue in ``folder``. ``fe`` and ``model`` (a description such as the
    checkpoint's checksum) are required to create one and checked against an existing one (the model
    by its checksum only, :func:`same_model`)."""

    def __init__(self, folder: str | os.PathLike, fe: FrontEnd | None = None, model: dict | None = None):
        self.folder = Path(folder)
        exists = (self.folder / "catalogue.sqlite").exists()
        if not exists and fe is None:
            raise FileNotFoundError(f"{self.folder}: no catalogue here (notebook 04_extract_fingerprints makes one)")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "vectors").mkdir(exist_ok=True)
        self.db = sqlite3.connect(self.folder / "catalogue.sqlite")
        try:
            self._open(exists, fe, model)
        except BaseException:
            self.db.close()
            raise

    def _open(self, exists: bool, fe: FrontEnd | None, model: dict | None) -> None:
        self.db.executescript(SCHEMA)
        if not exists:
            with self.db:
                self._set("frontend", fe.to_dict())
                self._set("model", model or {})
                self._set("next_vector", 0)
        self.fe = FrontEnd(**self._get("frontend"))
        self.model = self._get("model")
        if fe is not None and fe != self.fe:
            raise ValueError(f"{self.folder}: the catalogue was made with front end {self.fe.to_dict()}, "
                             f"not {fe.to_dict()}")
        if model is not None and self.model and not same_model(model, self.model):
            raise ValueError(f"{self.folder}: the catalogue was made with model {self.model}, not {model}; "
                             f"fingerprints of different models cannot be mixed")

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
        return storage.load_array(self.folder / "vectors" / f"{song.id}.npy")

    def all_vectors(self, songs: list[Song] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vector ids ``int64 [N]`` and fingerprints ``float32 [N, D]`` of ``songs`` (default: all)."""
        songs = self.songs() if songs is None else songs
        if not songs:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        ids = np.concatenate([np.arange(s.first_vector, s.first_vector + s.n_vectors) for s in songs])
        return ids.astype(np.int64), np.concatenate([self.vectors(s) for s in songs]).astype(np.float32)

    def state(self) -> str:
        """A digest of the catalogue's contents (songs and their vector ranges), to match an index to it."""
        h = hashlib.sha256()
        for s in self.songs():
            h.update(f"{s.id}:{s.first_vector}:{s.n_vectors}:{s.checksum};".encode())
        return h.hexdigest()

    # -- writing -------------------------------------------------------------------------------
    def add(self, path: str | os.PathLike, vectors: np.ndarray, duration: float, checksum: str,
            name: str | None = None) -> Song:
        """Store one song's fingerprints; its row is committed only after its vectors are on disk."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.db:
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
        with self.db:
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
    """A signal ``float32 [T]`` at ``fe.sr`` -> fingerprints ``float32 [N, D]`` of its windows every
    ``fe.hop_s`` (front end and model batched on ``device``)."""
    feats = logmel(torch.as_tensor(wav), fe, device=device)
    out = []
    with torch.inference_mode():
        for i in range(0, feats.shape[0], batch):
            out.append(model(feats[i : i + batch]).float().cpu())
    return torch.cat(out).numpy()


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


def extract(files: Iterable[str | os.PathLike], catalogue: Catalogue, model: torch.nn.Module,
            device: str | torch.device = "cpu", batch: int = 256, progress: bool = True,
            root: str | os.PathLike | None = None) -> ExtractResult:
    """Fingerprint ``files`` into ``catalogue`` (already present audio is skipped, so an interrupted run
    resumes). Unreadable or sub-window songs are skipped and reported. Names: :func:`song_name`."""
    fe = catalogue.fe
    model = model.to(device).eval()
    result = ExtractResult([], [], [])
    files = [Path(f) for f in files]
    for f in tqdm(files, desc="fingerprints", unit="song", disable=not progress):
        try:
            checksum = file_checksum(f)
        except OSError as e:
            result.skipped.append((str(f), f"cannot read: {e.strerror}"))
            continue
        if catalogue.find_checksum(checksum):
            result.already.append(str(f))
            continue
        try:
            wav = audio.load(f, fe.sr, min_duration=fe.win_s)
        except audio.AudioError as e:
            result.skipped.append((e.path, e.reason))
            continue
        vectors = fingerprint(wav, model, fe, batch, device)
        name = song_name(f, root)
        result.added.append(catalogue.add(f, vectors, len(wav) / fe.sr, checksum, name))
    return result


def same_model(a: dict, b: dict) -> bool:
    """Whether two model descriptions name the same model: by the checkpoint's SHA-256 when both have
    one (a copy of the checkpoint at another path is the same model), else by the whole description."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a == b


def model_description(checkpoint: str | os.PathLike) -> dict:
    """How a catalogue records the model that made its fingerprints."""
    return {"checkpoint": str(Path(checkpoint).resolve()), "sha256": file_checksum(checkpoint)}
