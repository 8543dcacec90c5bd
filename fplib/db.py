"""Operations on a catalogue and its index, each all or nothing: what ``fplib db`` and
``create_faiss_indexes`` do, callable without the command line.

* :func:`add` fingerprints songs into a catalogue and adds them to its index, or refuses the whole
  addition (:class:`~fplib.errors.Refused`, nothing changed) if any file is unusable, already in the
  catalogue, given twice or named like a song there (unless ``replace``: then it replaces that song);
  a failure later rolls the songs back.
* :func:`remove` removes songs, by name or id, from both; :func:`list_songs` lists them (optionally
  checking an index against the catalogue).
* :func:`compact` rewrites the vector store without removed songs (:meth:`Catalogue.compact`);
  :func:`merge` adds the songs of other catalogues (shards) to one, made if missing.
* :func:`build_index` builds a faiss index over a catalogue (:func:`fplib.index.build`).
* :func:`verify` checks a catalogue and an index in depth (``fplib db verify``), one :class:`Check` a line.

Each raises the project's errors (:mod:`fplib.errors`) and returns a small dataclass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fplib import audio, index, storage
from fplib import catalogue as store
from fplib.catalogue import Catalogue, Copy, Song
from fplib.checkpoints import load_model, model_description, same_model
from fplib.copies import find_copies
from fplib.errors import BadFileError, PartlyDone, Refused, check_file
from fplib.extraction import fingerprint_files
from fplib.storage import file_checksum


@dataclass
class Added:
    """Songs ``added`` to the catalogue and its index; ``songs`` in the catalogue now; non-audio files
    ``ignored`` in the folders given; ``replaced``: ``(new, old)`` songs of the same name (``replace``);
    ``copies``: near-identical songs found (:func:`fplib.copies.find_copies`)."""

    added: list[Song]
    songs: int
    ignored: list[str]
    replaced: list[tuple[Song, Song]] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    recovered: str | None = None  # what was done first to undo a killed earlier db add or remove


def add(
    catalogue: str | os.PathLike,
    index_path: str | os.PathLike,
    inputs: list[str | os.PathLike],
    checkpoint: str | os.PathLike,
    device: str = "cpu",
    progress: bool = True,
    replace: bool = False,
) -> Added:
    """Fingerprint the audio in ``inputs`` (files, and folders scanned recursively: a song is named by its
    path under the folder given, or by its file name) with the catalogue's model (``checkpoint``) into the
    existing ``catalogue`` and add them to its index ``index_path``, all or none.

    Everything is checked before anything changes: the model and front end are the catalogue's, the index
    matches the catalogue, and every file is readable audio of at least one window, not already in the
    catalogue, not given twice and not named like a song there (with ``replace``, a song of the same name
    is replaced, in the catalogue and the index); otherwise :class:`~fplib.errors.Refused` lists every
    problem. Near-identical songs are then looked for (:func:`fplib.copies.find_copies`). If
    fingerprinting or updating the index fails, the songs added are removed again and those replaced
    restored (:class:`~fplib.errors.PartlyDone`, or the error itself for an interruption or a full disk)."""
    files, problems, ignored = audio.collect_audio(inputs)
    model, fe = load_model(checkpoint, device)
    cat = Catalogue(catalogue)  # an existing catalogue only
    if cat.fe != fe or cat.legacy:
        cat.close()
        cat.require_store()
        raise ValueError(f"{checkpoint}: its front end differs from the catalogue's")
    with cat:
        _require_writable(cat, index_path)
        if cat.model and not same_model(model_description(checkpoint), cat.model):
            raise ValueError(
                f"{catalogue}: the catalogue was made by another model "
                f"({cat.model.get('checkpoint')}); pass it with --model"
            )
        recovered = _undo_interrupted(cat)  # a killed db add or remove: undone first
        index.load(index_path, cat)  # the index matches the catalogue before anything changes
        more, replacing = _addition_problems(cat, files, fe.win_s, replace)
        problems += more
        if problems:
            raise Refused(problems, "nothing was added")
        before, paths = {s.id for s in cat.songs()}, {f for f, _ in files}

        def added_now() -> list[int]:  # (ids are never reused)
            return [s.id for s in cat.songs() if s.id not in before and s.path in paths]

        with _undoable(cat, index_path, "add", {str(f) for f, _ in files}, replacing):
            try:
                rule = "always" if replace else "never"
                result = fingerprint_files(files, cat, model, device, 256, progress, replace=rule)
            except BaseException as e:
                _undo_addition(cat, added_now(), e, index_path, replacing)
                raise
            if result.skipped or result.already or result.duplicates:
                problem = PartlyDone(
                    "nothing was added",
                    result.skipped + [(str(f), "already in the catalogue") for f in result.already + result.duplicates],
                )
                _undo_addition(cat, added_now(), problem, index_path, replacing)
                raise problem
            new = result.added + [n for n, _ in result.replaced]
            try:
                with storage.restored_on_failure(*_index_files(index_path)):  # the index's files: all new or old
                    searchable = index.add_songs(index_path, cat, new, [old for _, old in result.replaced])
            except BaseException as e:
                _undo_addition(cat, [s.id for s in new], e, index_path, replacing)
                if isinstance(e, Exception) and not isinstance(e, storage.DiskFullError):
                    raise PartlyDone(f"{index_path}: {e}; nothing was added") from e
                raise
            copies = find_copies(cat, searchable)  # once added: new songs are compared with each other too
        return Added(result.added, len(cat), ignored, result.replaced, copies, recovered)


def _require_writable(cat: Catalogue, index_path: str | os.PathLike | None = None) -> None:
    """The catalogue and the folder of its index (whose files are replaced) can be written, before the work."""
    cat.require_writable()
    if index_path is not None:
        storage.check_writable(Path(index_path).parent, folder=True)


def _undo_addition(
    cat: Catalogue, song_ids: list[int], first: BaseException, index_path: str | os.PathLike, replaced: list[Song] = ()
) -> None:
    """Remove again the songs an addition that failed (``first``) had added, and restore those it ``replaced``
    (:meth:`Catalogue.restore`). If that fails as well (a disk still full), ``first`` is what is reported,
    with what is left to do: the songs are then in the catalogue but not in its index, and rebuilding the
    index takes them in."""
    try:
        cat.remove_many(song_ids)
        live = {s.id for s in cat.songs()}
        cat.restore([s for s in replaced if s.id not in live])
    except Exception as e:
        held = ", ".join(map(str, song_ids))
        _undo_failed(
            first, cat, index_path, f"holds the songs {held} left in the catalogue (removing them again failed: {e})"
        )


def _undo_failed(first: BaseException, cat: Catalogue, index_path: str | os.PathLike, which: str) -> None:
    """Raise ``first`` (the error that stopped a db change) once undoing the change failed in turn, saying what
    is left to do: rebuild the index, which then ``which`` (what the catalogue holds now)."""
    path = Path(index_path)
    left = (
        f"rebuild the index, which then {which}: create_faiss_indexes -i {cat.folder} -n {path.stem} -o {path.parent}"
    )
    if isinstance(first, storage.DiskFullError):
        raise storage.DiskFullError(first.filename, then=left) from first
    raise PartlyDone(f"{first}; {left}") from first


def _addition_problems(
    cat: Catalogue, files: list[tuple[str, str | None]], min_s: float, replace: bool = False
) -> tuple[list[tuple[str, str]], list[Song]]:
    """Why each of ``files`` (``(file, root folder or None)``) cannot be added to ``cat``: unreadable, shorter
    than ``min_s``, already in the catalogue, the same audio as another of them, named like a song there
    (unless ``replace``) or like another of them; and the songs that, with ``replace``, they replace."""
    problems, replacing = [], []
    there = {s.name: s for s in reversed(cat.songs())}  # (the first, if an older catalogue has several)
    names: set[str] = set()
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
            problems.append((f, f"named {name!r} like another file given"))
        elif name in there and not replace:
            problems.append((f, f"a song named {name!r} is already in the catalogue (--replace replaces it)"))
        elif name in there:
            replacing.append(there[name])
        seen[checksum] = f
        names.add(name)
    return problems, replacing


@dataclass
class Removed:
    """The songs ``removed``; ``songs`` left in the catalogue."""

    removed: list[Song]
    songs: int
    recovered: str | None = None  # what was done first to undo a killed earlier db add or remove


def remove(catalogue: str | os.PathLike, index_path: str | os.PathLike, songs: list[str]) -> Removed:
    """Remove ``songs`` (names as listed, or numeric ids) from ``catalogue`` and its index, all or none: a
    name or id that is not there, or a name several songs share, refuses the whole removal
    (:class:`~fplib.errors.Refused`), as does an index that does not match the catalogue. A write that fails
    (a full disk) leaves both as they were: the index's files are put back, the songs restored."""
    with Catalogue(catalogue) as cat:
        if (cat.folder / UNDO).exists():
            _require_writable(cat, index_path)
        recovered = _undo_interrupted(cat)  # a killed db add or remove: undone first
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
        _require_writable(cat, index_path)
        index.load(index_path, cat)  # the index matches the catalogue before anything changes
        with _undoable(cat, index_path, "remove", set(), list(chosen.values())):
            try:
                with storage.restored_on_failure(*_index_files(index_path)):  # the index's files: all new or old
                    index.remove_songs(index_path, cat, list(chosen))
            except BaseException as e:  # the index is as it was: so are the catalogue's songs
                live = {s.id for s in cat.songs()}
                try:
                    cat.restore([s for s in chosen.values() if s.id not in live])
                except Exception as again:
                    what = f"leaves out the songs removed from the catalogue (putting them back failed: {again})"
                    _undo_failed(e, cat, index_path, what)
                raise
        return Removed(list(chosen.values()), len(cat), recovered)


def _index_files(index_path: str | os.PathLike) -> list[Path]:
    """The files of an index, replaced together when it changes: ``NAME.index``, its mapping and metadata."""
    return [Path(index_path), index.mapping_path(index_path), index.meta_path(index_path)]


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
        cat.require_writable()
        old = cat.store_path() if not cat.legacy else None
        before = os.path.getsize(old) if old is not None and os.path.exists(old) else None
        new = cat.compact(dtype, progress=progress)
        after = os.path.getsize(cat.store_path(new)) if new["rows"] else 0
        return Compacted(len(cat), new["rows"], new["dtype"], new["file"], before, after)


@dataclass
class Merged:
    """Songs ``added`` from the other catalogues; ``songs`` in the catalogue now; ``replaced`` (``(new,
    old)``, with ``replace``), ``unchanged`` (already there: a resumed merge), ``duplicates`` (``(song not
    merged, song there)``: the same audio under another name) and the near-identical songs found
    (``copies``)."""

    added: list[Song]
    songs: int
    replaced: list[tuple[Song, Song]] = field(default_factory=list)
    unchanged: int = 0
    duplicates: list[tuple[Song, Song]] = field(default_factory=list)
    copies: list[Copy] | None = field(default_factory=list)


def merge(
    catalogue: str | os.PathLike, shards: list[str | os.PathLike], progress: bool = False, replace: bool = False
) -> Merged:
    """Add every song of the catalogues ``shards`` (made by one model, e.g. extracted on other machines) to
    ``catalogue``, made if missing with the first shard's front end, model and store dtype
    (:func:`fplib.catalogue.merge`). Audio already there under the same name is left, so an interrupted merge
    resumes; under another name it is not added, and reported. A name already there (or in an earlier
    shard) with other audio refuses the whole merge (:class:`~fplib.errors.Refused`, listing them), unless
    ``replace``: then the song merged replaces it. Near-identical songs are then looked for
    (:func:`fplib.copies.find_copies`; ``copies`` None: the catalogue is too large to compare them without
    its index, which ``create_faiss_indexes`` builds, and compares them)."""
    with Catalogue(shards[0]) as first:
        fe, model, dtype = first.fe, first.model, first.store_dtype
    new = not os.path.lexists(os.path.join(catalogue, "catalogue.sqlite"))
    with Catalogue(catalogue, fe, model, store_dtype=dtype if new and dtype != "uint8" else None) as target:
        target.require_writable()
        r = store.merge(target, shards, progress=progress, replace="always" if replace else "never")
        copies = find_copies(target)
        return Merged(r.added, len(target), r.replaced, r.unchanged, r.duplicates, copies)


@dataclass
class Built:
    """The index file written (``path``; its mapping is ``path.with_suffix(".json")``) and the ``songs``
    it indexes; ``copies``: near-identical songs found among songs not yet compared (a catalogue too large
    to compare without its index, :func:`fplib.copies.find_copies`)."""

    path: Path
    songs: int
    copies: list[Copy] = field(default_factory=list)


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
        storage.check_writable(out_dir, folder=True)  # before the work, not after it
        storage.clean_stale_temps(out_dir)  # what a killed build left behind
        try:
            path = index.build(cat, name, Path(out_dir), m=m, d=d, nlist=nlist, factory=factory, nprobe=nprobe)
        except RuntimeError as e:  # faiss's errors (and a compaction meanwhile): bad settings, nothing written
            raise ValueError(str(e)) from e
        copies = []
        if any(s.first_vector >= cat.copies_checked for s in cat.songs()) and _can_write(cat):
            copies = find_copies(cat, index.load(path, cat)) or []  # what generate_fingerprints left
        return Built(path, len(cat), copies)


def _can_write(cat: Catalogue) -> bool:
    """Whether the catalogue's database can be written (without trying: building an index needs only read it)."""
    return os.access(cat.path, os.W_OK) and os.access(cat.folder, os.W_OK)


class Check(NamedTuple):
    """One line of :func:`verify`: what was checked (``name``), whether it is ``ok`` (True; False: damaged;
    None: nothing was recorded to check it against) and ``detail``."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        """``name: ok|damaged|not recorded: detail``, as ``fplib db verify`` prints it."""
        return f"{self.name}: {'ok' if self.ok else 'not recorded' if self.ok is None else 'damaged'}: {self.detail}"


def verify(
    catalogue: str | os.PathLike, index_path: str | os.PathLike | None = None, samples: int = index.VERIFY_SAMPLES
) -> list[Check]:
    """Check everything stored of ``catalogue`` (and of the index ``index_path``) in depth, as ``fplib db
    verify`` does, and say what was found, one :class:`Check` each:

    * ``catalogue database``: SQLite's ``integrity_check`` of ``catalogue.sqlite`` (the whole database);
    * ``vector store``: its size against the committed rows and their width;
    * ``song fingerprints``: every song's rows against the SHA-256 recorded when they were stored (one pass
      over the store: 1.4 s per GB here from the page cache, or as long as the disk takes to read it);
    * ``index file``: the whole file's SHA-256 against the one recorded when it was written;
    * ``index against the catalogue``: the model, the catalogue state, the vector count and the song mapping;
    * ``index re-score``: ``samples`` windows of the catalogue, drawn at random, searched in the index
      (:func:`fplib.index.rescore`; fewer than half found is damage).

    Opening the catalogue does not stop at its first damaged song (its sampled check is left to the
    ``song fingerprints`` line). A missing catalogue or index, or a path that is not one, raises as
    everywhere (a usage error); what is damaged is reported, not raised."""
    folder = Path(catalogue)
    try:
        cat = Catalogue(folder, check_rows=False)
    except BadFileError as e:
        if not Path(e.path).name.startswith(("catalogue.sqlite", "vectors")):
            raise
        if Path(e.path).name.startswith("catalogue.sqlite"):
            return [Check(DATABASE, False, str(e))]
        uri = f"{(folder / 'catalogue.sqlite').absolute().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
            problems = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        return [_integrity(problems, None), Check(STORE, False, str(e))]
    with cat:
        songs = cat.songs()
        checks = [_integrity(cat.integrity_check(), len(songs))]
        if cat.legacy:
            checks.append(
                Check(
                    STORE,
                    None,
                    f"a catalogue of an older fplib (one file per song), without a vector store; convert it: "
                    f"fplib db compact --catalogue {folder}",
                )
            )
        else:
            store = cat.store
            size = os.path.getsize(cat.store_path(store)) if os.path.lexists(cat.store_path(store)) else 0
            need = store["rows"] * (store["width"] or 0) * np.dtype(store["dtype"]).itemsize
            past = f"; {size - need} bytes past them, a killed addition's, cut off by the next" if size > need else ""
            what = f"{store['rows']} rows of {store['width']} {store['dtype']} in {store['file']}{past}"
            checks.append(Check(STORE, True, what))
        checks.append(_rows_check(cat.check_rows(songs), len(songs), folder))
        if index_path is not None:
            checks += _index_checks(Path(index_path), cat, songs, samples)
    return checks


DATABASE, STORE, ROWS = "catalogue database", "vector store", "song fingerprints"


def _integrity(problems: list[str], n_songs: int | None) -> Check:
    if problems == ["ok"]:
        return Check(DATABASE, True, "SQLite integrity_check" + (f"; {n_songs} songs" if n_songs is not None else ""))
    return Check(DATABASE, False, f"SQLite integrity_check: {'; '.join(problems[:3])}; restore it from a copy")


def _rows_check(found: store.RowCheck, n: int, folder: Path) -> Check:
    record = f"record them: fplib db compact --catalogue {folder}"
    if found.damaged:
        shown = ", ".join(
            f"{s.id} {s.name!r} (rows {s.row} .. {s.row + s.n_vectors - 1})" for s, _ in found.damaged[:10]
        )
        more = f" and {len(found.damaged) - 10} more" if len(found.damaged) > 10 else ""
        unrecorded = f"; no checksum for {len(found.unrecorded)} other(s)" if found.unrecorded else ""
        return Check(
            ROWS,
            False,
            f"{len(found.damaged)} of {n} songs {store.ROWS_DIFFER} (or cannot be read): {shown}{more}{unrecorded}; "
            f"restore the store from a copy or extract the catalogue again",
        )
    if found.unrecorded:
        others = f"; the other {len(found.ok)} match theirs" if found.ok else ""
        return Check(
            ROWS,
            None,
            f"no checksum for {len(found.unrecorded)} of {n} songs (stored by an older fplib{others}); {record}",
        )
    return Check(ROWS, True, f"{n} songs, each one's rows as recorded when they were stored")


def _index_checks(path: Path, cat: Catalogue, songs: list[Song], samples: int) -> list[Check]:
    """The ``index file``, ``index against the catalogue`` and ``index re-score`` lines of :func:`verify`."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no index (notebook 05 or create_faiss_indexes builds it)")
    rebuild = f"create_faiss_indexes -i {cat.folder} -n {path.stem} -o {path.parent}"
    try:
        check_file(path)
        meta = index.read_meta(path)
        recorded = index.check_index_file(path, meta, full=True, rebuild=f"rebuild it: {rebuild}")
    except BadFileError as e:
        return [Check(INDEX_FILE, False, str(e))]
    if recorded:
        checks = [Check(INDEX_FILE, True, f"{meta['file']['bytes']} bytes, SHA-256 as recorded when it was written")]
    else:
        checks = [Check(INDEX_FILE, None, f"rebuild it to record one: {rebuild}")]
    try:
        built = index.load(path, cat, checksum=False, samples=0)
    except BadFileError as e:
        return [*checks, Check(MATCH, False, str(e))]
    checks.append(
        Check(MATCH, True, f"{built.ntotal} vectors of {len(songs)} songs, built from them by the catalogue's model")
    )
    found, searched = index.rescore(built, cat, samples, songs)
    if 2 * found < searched:
        return [*checks, Check(RESCORE, False, index.rescore_failed(found, searched, cat, f"rebuild it: {rebuild}"))]
    return [
        *checks,
        Check(
            RESCORE,
            True,
            f"{found} of {searched} windows of the catalogue, drawn at random, found themselves among the "
            f"{index.RESCORE_K} nearest",
        ),
    ]


INDEX_FILE, MATCH, RESCORE = "index file", "index against the catalogue", "index re-score"


# -- an undo record for db add and db remove, so that a killed one is undone by running it again ----------
UNDO = ".db-undo"  # a folder in the catalogue's: journal.json and the index's files as they were


@contextlib.contextmanager
def _undoable(cat: Catalogue, index_path: str | os.PathLike, what: str, paths: set[str], restore: list[Song]):
    """Around a change of ``cat`` and its index by ``fplib db add`` / ``remove`` (``what``): first record what
    undoes it (the index's files as they are, kept as hard links; the songs to take out again, those added
    from ``paths``; the songs to put back, ``restore``), then run the change. It goes in several steps (songs
    committed one by one, then the index's three files), and a process killed between two of them would leave
    the catalogue and its index apart; running the command again first undoes what the record says
    (:func:`_undo_interrupted`), then does the whole change. When the change fails with an error, the record
    is played here too (after the change's own undo) and removed once catalogue and index are as they were;
    if that fails as well (a disk still full), it stays for the next run. Removed when the change is done."""
    folder = cat.folder / UNDO
    try:
        folder.mkdir()  # (what a killed one left was undone by _undo_interrupted; made at once: one at a time)
    except FileExistsError:
        raise Refused(
            [(str(cat.folder), "another fplib db add or remove is changing this catalogue and its index now")],
            "nothing was done; run it again when that one has finished",
        ) from None
    files = {}
    for i, p in enumerate(_index_files(index_path)):
        if p.is_file():
            kept = folder / f"index-file-{i}"
            try:
                os.link(p, kept)
            except OSError as e:
                if storage.is_disk_full(e):
                    raise storage.DiskFullError(kept) from e
                shutil.copyfile(p, kept)  # a file system without hard links
            files[kept.name] = str(Path(p).absolute())
    journal = {
        "what": what,
        "by": storage.this_process(),
        "index_files": files,
        "last_id": max((s.id for s in cat.songs()), default=0),
        "paths": sorted(paths),
        "restore": [asdict(s) for s in restore],
        "state": cat.state(),
    }
    storage.write_json(folder / "journal.json", journal)  # written last: the record is whole once it exists
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            _play(cat, journal)
            shutil.rmtree(folder)
        raise
    shutil.rmtree(folder, ignore_errors=True)


def _undo_interrupted(cat: Catalogue) -> str | None:
    """If an earlier ``fplib db add`` / ``remove`` on ``cat`` was killed part-way (its undo record is there),
    put the catalogue and its index back as they were before it; returns what was done (None: nothing)."""
    folder = cat.folder / UNDO
    journal_path = folder / "journal.json"
    if not journal_path.is_file():
        shutil.rmtree(folder, ignore_errors=True)  # killed while the record was being written: nothing changed
        return None
    try:
        journal = storage.read_json(journal_path)
    except (OSError, ValueError) as e:
        reason = f"the undo record of an interrupted fplib db command is unreadable ({e})"
        raise BadFileError(journal_path, reason) from e
    if storage.running_elsewhere(journal.get("by")):
        raise Refused(
            [(str(cat.folder), f"fplib db {journal['what']} (process {journal['by'][1]}) is changing it now")],
            "nothing was done; run it again when that one has finished",
        )
    _play(cat, journal)
    shutil.rmtree(folder)
    return (
        f"an interrupted fplib db {journal['what']} was undone first: {cat.folder} and its index "
        f"{Path(next(iter(journal['index_files'].values()), '?')).name} are as they were before it"
    )


def _play(cat: Catalogue, journal: dict) -> None:
    """Undo what the record ``journal`` describes (again, if part of it was done already)."""
    folder = cat.folder / UNDO
    for kept, target in journal["index_files"].items():
        if os.path.exists(target) and os.path.samefile(folder / kept, target):
            continue  # not replaced yet (and a rename between two links of one file would do nothing)
        prefix, suffix = storage.temp_name(target)
        tmp = Path(target).with_name(f"{prefix}{os.urandom(4).hex()}{suffix}")  # (cleaned up like any temporary)
        try:
            os.link(folder / kept, tmp)  # (no space needed: the index's files are replaced, never rewritten)
        except OSError:
            shutil.copyfile(folder / kept, tmp)
        os.replace(tmp, target)
    live = cat.songs()
    paths = set(journal["paths"])
    cat.remove_many([s.id for s in live if s.id > journal["last_id"] and s.path in paths])
    live_ids = {s.id for s in cat.songs()}
    cat.restore([Song(**d) for d in journal["restore"] if d["id"] not in live_ids])
    if cat.state() != journal["state"]:
        raise PartlyDone(
            f"{cat.folder}: undoing an interrupted fplib db {journal['what']} left the catalogue in another state "
            f"than before it (changed meanwhile?); rebuild its index: create_faiss_indexes -i {cat.folder} ..."
        )
