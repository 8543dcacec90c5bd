"""Operations on a catalogue and its index, each all or nothing: what ``fplib db`` and
``create_faiss_indexes`` do, callable without the command line.

* :func:`add` fingerprints songs into a catalogue and adds them to its index, or refuses the whole
  addition (:class:`~fplib.errors.Refused`, nothing changed) if any file is unusable, already in the
  catalogue, given twice or named like a song there; a failure later rolls the songs back.
* :func:`remove` removes songs, by name or id, from both; :func:`list_songs` lists them (optionally
  checking an index against the catalogue).
* :func:`compact` rewrites the vector store without removed songs (:meth:`Catalogue.compact`);
  :func:`merge` adds the songs of other catalogues (shards) to one, made if missing.
* :func:`build_index` builds a faiss index over a catalogue (:func:`fplib.index.build`).

Each raises the project's errors (:mod:`fplib.errors`) and returns a small dataclass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fplib import audio, index, storage
from fplib import catalogue as store
from fplib.catalogue import Catalogue, Song
from fplib.checkpoints import load_model, model_description, same_model
from fplib.errors import PartlyDone, Refused
from fplib.extraction import fingerprint_files
from fplib.storage import file_checksum


@dataclass
class Added:
    """Songs ``added`` to the catalogue and its index; ``songs`` in the catalogue now; non-audio files
    ``ignored`` in the folders given."""

    added: list[Song]
    songs: int
    ignored: list[str]


def add(
    catalogue: str | os.PathLike,
    index_path: str | os.PathLike,
    inputs: list[str | os.PathLike],
    checkpoint: str | os.PathLike,
    device: str = "cpu",
    progress: bool = True,
) -> Added:
    """Fingerprint the audio in ``inputs`` (files, and folders scanned recursively: a song is named by its
    path under the folder given, or by its file name) with the catalogue's model (``checkpoint``) into the
    existing ``catalogue`` and add them to its index ``index_path``, all or none.

    Everything is checked before anything changes: the model and front end are the catalogue's, the index
    matches the catalogue, and every file is readable audio of at least one window, not already in the
    catalogue, not given twice and not named like a song there; otherwise :class:`~fplib.errors.Refused`
    lists every problem. If fingerprinting or updating the index then fails, the songs added are removed
    again (:class:`~fplib.errors.PartlyDone`, or the error itself for an interruption or a full disk)."""
    files, problems, ignored = audio.collect_audio(inputs)
    model, fe = load_model(checkpoint, device)
    cat = Catalogue(catalogue)  # an existing catalogue only
    if cat.fe != fe or cat.legacy:
        cat.close()
        cat.require_store()
        raise ValueError(f"{checkpoint}: its front end differs from the catalogue's")
    with cat:
        if cat.model and not same_model(model_description(checkpoint), cat.model):
            raise ValueError(
                f"{catalogue}: the catalogue was made by another model "
                f"({cat.model.get('checkpoint')}); pass it with --model"
            )
        index.load(index_path, cat)  # the index matches the catalogue before anything changes
        problems += _addition_problems(cat, files, fe.win_s)
        if problems:
            raise Refused(problems, "nothing was added")
        try:
            result = fingerprint_files(files, cat, model, device, 256, progress)
        except BaseException:
            cat.remove_many([s.id for s in cat.songs() if s.path in {f for f, _ in files}])
            raise
        if result.skipped or result.already:
            cat.remove_many([s.id for s in result.added])
            raise PartlyDone(
                "nothing was added", result.skipped + [(f, "already in the catalogue") for f in result.already]
            )
        try:
            index.add_songs(index_path, cat, result.added)
        except BaseException as e:
            cat.remove_many([s.id for s in result.added])
            if isinstance(e, Exception):
                raise PartlyDone(f"{index_path}: {e}; nothing was added") from e
            raise
        return Added(result.added, len(cat), ignored)


def _addition_problems(cat: Catalogue, files: list[tuple[str, str | None]], min_s: float) -> list[tuple[str, str]]:
    """Why each of ``files`` (``(file, root folder or None)``) cannot be added to ``cat``: unreadable, shorter
    than ``min_s``, already in the catalogue, the same audio as another of them, or named like a song there."""
    problems = []
    names = {s.name for s in cat.songs()}
    seen: dict[str, str] = {}
    for f, root in files:
        name = str(Path(f).relative_to(root).with_suffix("")) if root else Path(f).stem
        try:
            duration = audio.info(f).duration
            if duration < min_s:
                raise audio.AudioError(f, f"too short: {duration:.2f} s, at least {min_s} s needed")
            checksum = file_checksum(f)
        except (audio.AudioError, OSError) as e:
            problems.append((f, getattr(e, "reason", str(e))))
            continue
        known = cat.find_checksum(checksum)
        if known is not None:
            problems.append((f, f"already in the catalogue as song {known.id} {known.name!r}"))
        elif checksum in seen:
            problems.append((f, f"the same audio as {seen[checksum]}, given twice"))
        elif name in names:
            problems.append((f, f"a song named {name!r} is already in the catalogue"))
        seen[checksum] = f
        names.add(name)
    return problems


@dataclass
class Removed:
    """The songs ``removed``; ``songs`` left in the catalogue."""

    removed: list[Song]
    songs: int


def remove(catalogue: str | os.PathLike, index_path: str | os.PathLike, songs: list[str]) -> Removed:
    """Remove ``songs`` (names as listed, or numeric ids) from ``catalogue`` and its index, all or none: a
    name or id that is not there, or a name several songs share, refuses the whole removal
    (:class:`~fplib.errors.Refused`), as does an index that does not match the catalogue."""
    with Catalogue(catalogue) as cat:
        every = cat.songs()
        by_name: dict[str, list[Song]] = {}
        for s in every:
            by_name.setdefault(s.name, []).append(s)
        by_id = {s.id: s for s in every}
        chosen: dict[int, Song] = {}
        problems = []
        for word in songs:
            if word in by_name and len(by_name[word]) == 1:
                chosen[by_name[word][0].id] = by_name[word][0]
            elif word in by_name:
                problems.append(
                    (
                        repr(word),
                        f"{len(by_name[word])} songs have this name (ids "
                        f"{', '.join(str(s.id) for s in by_name[word])}); remove by id",
                    )
                )
            elif word.isdigit() and int(word) in by_id:
                chosen[int(word)] = by_id[int(word)]
            else:
                problems.append((repr(word), f"no song with this name or id in {catalogue} (fplib db list)"))
        if problems:
            raise Refused(problems, "nothing was removed")
        index.load(index_path, cat)  # the index matches the catalogue before anything changes
        index.remove_songs(index_path, cat, list(chosen))
        return Removed(list(chosen.values()), len(cat))


def list_songs(catalogue: str | os.PathLike, index_path: str | os.PathLike | None = None) -> list[Song]:
    """The songs of ``catalogue``, in vector-id order; with ``index_path``, after checking that the index
    matches the catalogue (:func:`fplib.index.load`)."""
    with Catalogue(catalogue) as cat:
        songs = cat.songs()
        if index_path:
            index.load(index_path, cat)
    return songs


@dataclass
class Compacted:
    """The catalogue's ``songs`` and its new store: ``rows`` of ``dtype`` in the file ``file``, of
    ``bytes_after`` bytes; ``bytes_before``: the previous store's size (None: an older catalogue's
    per-song files were converted)."""

    songs: int
    rows: int
    dtype: str
    file: str
    bytes_before: int | None
    bytes_after: int


def compact(catalogue: str | os.PathLike, dtype: str | None = None, progress: bool = False) -> Compacted:
    """Rewrite the vector store of ``catalogue`` without removed songs, as ``dtype`` (default: its own),
    and switch to it atomically (:meth:`Catalogue.compact`); also converts a catalogue of an older fplib."""
    with Catalogue(catalogue) as cat:
        old = cat.store_path() if not cat.legacy else None
        before = os.path.getsize(old) if old is not None and os.path.exists(old) else None
        new = cat.compact(dtype, progress=progress)
        after = os.path.getsize(cat.store_path(new)) if new["rows"] else 0
        return Compacted(len(cat), new["rows"], new["dtype"], new["file"], before, after)


@dataclass
class Merged:
    """Songs ``added`` from the other catalogues; ``songs`` in the catalogue now."""

    added: list[Song]
    songs: int


def merge(catalogue: str | os.PathLike, shards: list[str | os.PathLike], progress: bool = False) -> Merged:
    """Add every song of the catalogues ``shards`` (made by one model, e.g. extracted on other machines) to
    ``catalogue``, made if missing with the first shard's front end, model and store dtype; audio already
    there is skipped, so an interrupted merge resumes (:func:`fplib.catalogue.merge`)."""
    with Catalogue(shards[0]) as first:
        fe, model, dtype = first.fe, first.model, first.store_dtype
    new = not os.path.lexists(os.path.join(catalogue, "catalogue.sqlite"))
    with Catalogue(catalogue, fe, model, store_dtype=dtype if new and dtype != "uint8" else None) as target:
        added = store.merge(target, shards, progress=progress)
        return Merged(added, len(target))


@dataclass
class Built:
    """The index file written (``path``; its mapping is ``path.with_suffix(".json")``) and the ``songs``
    it indexes."""

    path: Path
    songs: int


def build_index(
    catalogue: str | os.PathLike,
    name: str,
    out_dir: str | os.PathLike,
    m: int = 32,
    d: int = 128,
    nlist: int = 256,
    factory: str | None = None,
    nprobe: int = 40,
) -> Built:
    """Build the faiss index ``out_dir/name.index`` over ``catalogue`` (:func:`fplib.index.build`), after
    deleting what a killed earlier build left in ``out_dir``. An index faiss cannot make of these
    settings (a factory string it does not know, too few vectors to train it) is a ``ValueError``."""
    with Catalogue(catalogue) as cat:
        storage.clean_stale_temps(out_dir)  # what a killed build left behind
        try:
            path = index.build(cat, name, Path(out_dir), m=m, d=d, nlist=nlist, factory=factory, nprobe=nprobe)
        except RuntimeError as e:  # faiss's errors (and a compaction meanwhile): bad settings, nothing written
            raise ValueError(str(e)) from e
        return Built(path, len(cat))
