"""Running a network over audio into a catalogue: the fingerprints of a signal (:func:`fingerprint`,
:func:`embed`), of files into a catalogue (:func:`extract`, :func:`fingerprint_files`), and of folders
into a catalogue, sharded over processes under ``torchrun`` (:func:`fingerprint_folders`: what
``generate_fingerprints`` does).

The catalogue itself, which stores what is computed here, is :mod:`fplib.catalogue`; copying songs
between catalogues runs no network and is :func:`fplib.catalogue.merge`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fplib import audio, codes, engine, storage
from fplib.catalogue import AlreadyInCatalogue, Catalogue, Copy, Song, SongNames, merge
from fplib.checkpoints import load_model, model_description
from fplib.copies import find_copies
from fplib.errors import Refused, file_problem
from fplib.features import FrontEnd, logmel
from fplib.models.registry import kind_of_model
from fplib.storage import file_checksum

SHORT_SIGNAL_S = 12.0  # signals up to this long (queries) get a one-thread front end in fingerprint()


def fingerprint(
    wav: np.ndarray | torch.Tensor,
    model: torch.nn.Module,
    fe: FrontEnd,
    batch: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """A signal ``float32 [T]`` at ``fe.sr`` -> the fingerprints of its windows every ``fe.hop_s``, as stored
    for the model's kind (:mod:`fplib.codes`): ``float32 [N, D]`` unit vectors, or binary codes packed
    ``uint8 [N, D / 8]`` (front end and model batched on ``device``; on CPU the network runs in
    OpenVINO or ONNX Runtime, see :mod:`fplib.engine`)."""
    wav = torch.as_tensor(wav)
    # A query's front end is too small to gain from a second thread, and torch's idle threads spin
    # for a few milliseconds after it, holding the cores the network's threads need next (a 1-s
    # query's network took 11-13 ms after a two-thread front end against 7-8 ms after a one-thread
    # one: benchmarks/bench_query.py)
    short = torch.device(device).type == "cpu" and len(wav) <= SHORT_SIGNAL_S * fe.sr
    with engine.torch_threads(1) if short else contextlib.nullcontext():
        feats = logmel(wav, fe, device=device)
    return embed(feats, model, batch)


def embed(feats: torch.Tensor, model: torch.nn.Module, batch: int = 256) -> np.ndarray:
    """The network's part of :func:`fingerprint`: front-end windows ``[N, 1, n_mels, n_frames]`` (on the
    model's device) -> stored fingerprints."""
    run = engine.runner(model, feats[:1])
    out = []
    with torch.inference_mode():
        for i in range(0, feats.shape[0], batch):
            out.append(run(feats[i : i + batch]).float().cpu())
    return codes.encode(torch.cat(out), kind_of_model(model))


@dataclass
class ExtractResult:
    """What :func:`extract` did, by the rule of :class:`~fplib.catalogue.SongNames`: songs ``added``;
    ``already``: files already there, same audio under the same name (unchanged); ``skipped``: ``(file,
    reason)``, unusable, or named like a song of another file; ``replaced``: ``(new song, old song)``, a file's
    new audio under its name; ``duplicates``: ``(file, song)``, audio already there under another name."""

    added: list[Song]
    already: list[str]
    skipped: list[tuple[str, str]]
    replaced: list[tuple[Song, Song]] = field(default_factory=list)
    duplicates: list[tuple[str, Song]] = field(default_factory=list)

    def extend(self, other: ExtractResult) -> None:
        self.added += other.added
        self.already += other.already
        self.skipped += other.skipped
        self.replaced += other.replaced
        self.duplicates += other.duplicates


def song_name(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """A song's catalogue name: its path under ``root`` without the extension (``album/track``), or
    the file's stem when there is no ``root`` or the file is not under it."""
    path = Path(path)
    if root is not None:
        for p, r in (
            (path, Path(root)),
            (path.absolute(), Path(root).absolute()),
            (path.resolve(), Path(root).resolve()),
        ):
            if p.is_relative_to(r):
                return str(p.relative_to(r).with_suffix(""))
    return path.stem


class _Decoded(torch.utils.data.Dataset):
    """Song ``i`` of ``files`` read, checksummed and decoded to ``fe.sr`` (in a DataLoader worker):
    ``(i, "ok", (checksum, seconds, x))``, ``(i, "already", checksum)`` for audio in ``known`` (not
    decoded), or ``(i, "skipped", (path, reason))``. ``x`` is the signal ``[T]``, or with ``features``
    its front-end windows ``[N, 1, n_mels, n_frames]`` (the worker then also runs the front end, which
    balances a CPU's work between the decoding worker and the network)."""

    def __init__(self, files: list[Path], fe: FrontEnd, known: set[str], features: bool = False):
        self.files, self.fe, self.known, self.features = files, fe, known, features

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
        x = torch.from_numpy(wav)
        return i, "ok", (checksum, len(wav) / self.fe.sr, logmel(x, self.fe) if self.features else x)


def _as_is(item):
    return item


def extract(
    files: Iterable[str | os.PathLike],
    catalogue: Catalogue,
    model: torch.nn.Module,
    device: str | torch.device = "cpu",
    batch: int = 256,
    progress: bool = True,
    root: str | os.PathLike | None = None,
    workers: int | None = None,
    names: dict[str, str] | None = None,
    skip: set[str] | None = None,
    replace: str = "same_file",
) -> ExtractResult:
    """Fingerprint ``files`` into ``catalogue`` (already present audio is skipped without being decoded, so an
    interrupted run resumes). Unreadable or sub-window songs are skipped and reported. Names: :func:`song_name`,
    or ``names[str(file)]`` where given (e.g. another catalogue's names for the same files, to compare
    models on the same songs under the same names). A name already there with other audio is replaced, or
    the file skipped, by the rule ``replace`` (:class:`~fplib.catalogue.SongNames`: by default replaced
    when the song came from the same file); the same audio under another name is a duplicate, not added.

    Songs are read and decoded by ``workers`` DataLoader worker processes (default: 1 where the
    machine has more than one core and there is more than one file) while this process runs the
    front end and the network on the songs before them; songs are added in the order of ``files``,
    each in its own transaction, so the catalogue is the same with or without workers. Audio whose
    checksum is in ``skip`` (e.g. already merged from this catalogue's shards) counts as already there."""
    fe = catalogue.fe
    if kind_of_model(model) != catalogue.kind:
        raise ValueError(
            f"{catalogue.folder}: a catalogue of {catalogue.kind} fingerprints; this model makes "
            f"{kind_of_model(model)} ones"
        )
    catalogue.require_store()
    model = model.to(device).eval()
    result = ExtractResult([], [], [])
    files = [Path(f) for f in files]
    storage.clean_stale_temps(catalogue.folder, catalogue.folder / "vectors")  # left by a killed run
    if workers is None:
        workers = 1 if len(files) > 1 and (os.cpu_count() or 1) > 1 else 0
    known = {r[0] for r in catalogue.db.execute("SELECT checksum FROM songs")} | set(skip or ())
    # on CPU the workers also run the front end: decoding + front end then take about as long as the
    # network, so neither side waits (on GPU the front end runs there, beside the network)
    on_cpu = torch.device(device).type == "cpu"
    loader = torch.utils.data.DataLoader(
        _Decoded(files, fe, known, on_cpu),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=2 if workers else None,
    )
    threads = torch.get_num_threads()
    # the decoding workers take a core each: fewer threads here than the network would otherwise
    # use, so that no operator waits for a thread the decoder has preempted
    with engine.torch_threads(max(1, threads - workers) if workers and on_cpu else threads):
        _extract_loop(loader, files, catalogue, model, fe, batch, device, root, result, progress, names or {}, replace)
    return result


def _extract_loop(loader, files, catalogue, model, fe, batch, device, root, result, progress, names, replace) -> None:
    there = SongNames(catalogue.songs())
    for i, status, payload in tqdm(loader, total=len(files), desc="fingerprints", unit="song", disable=not progress):
        f = files[i]
        if status == "skipped":
            result.skipped.append(payload)
            continue
        checksum = payload if status == "already" else payload[0]
        name = names.get(str(f)) or song_name(f, root)
        action, old = there.plan(name, f, checksum, replace)
        if action == "duplicate":
            result.duplicates.append((str(f), old))
            continue
        if action == "taken":
            result.skipped.append((str(f), _taken(name, old)))
            continue
        if action == "unchanged" or status == "already" or catalogue.find_checksum(checksum):
            result.already.append(str(f))  # (or in ``skip``: already merged into the final catalogue)
            continue
        _, seconds, x = payload
        vectors = fingerprint(x, model, fe, batch, device) if x.ndim == 1 else embed(x, model, batch)
        try:
            new = catalogue.add(f, vectors, seconds, checksum, name, old.id if old else None)
        except AlreadyInCatalogue:  # added meanwhile by another process
            result.already.append(str(f))
            continue
        there.took(new, old)
        if old is None:
            result.added.append(new)
        else:
            result.replaced.append((new, old))


def _taken(name: str, song: Song) -> str:
    return (
        f"a song named {name!r} is already in the catalogue, from another file ({song.path}); to keep both, "
        f"give their parent folder so that names include it; to replace it, remove it first (fplib db remove)"
    )


def shard_folder(folder: str | os.PathLike, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` writes its shard of catalogue ``folder`` (under ``FOLDER.shards/``)."""
    folder = Path(folder).absolute()
    return folder.with_name(folder.name + ".shards") / f"rank-{rank:03d}-of-{world:03d}"


def fingerprint_files(
    files: list[tuple[str, str | None]],
    catalogue: Catalogue,
    model: torch.nn.Module,
    device: str | torch.device = "cpu",
    batch: int = 256,
    progress: bool = True,
    workers: int | None = None,
    skip: set[str] | None = None,
    replace: str = "same_file",
) -> ExtractResult:
    """:func:`extract` of ``files`` given as ``(audio file, root folder or None)`` (as
    :func:`fplib.audio.collect_audio` lists them), each song named by its path under its root folder (or
    its file name): one :class:`ExtractResult` for all."""
    total = ExtractResult([], [], [])
    for root, group in groupby(files, key=lambda fr: fr[1]):
        r = extract(
            [f for f, _ in group],
            catalogue,
            model,
            device=device,
            batch=batch,
            progress=progress,
            root=root,
            workers=workers,
            skip=skip,
            replace=replace,
        )
        total.extend(r)
    return total


@dataclass
class FolderResult:
    """What :func:`fingerprint_folders` did: songs ``added``, files ``already`` in the catalogue (unchanged)
    and ``skipped`` (with the reason) on every rank, ``replaced`` (``(new, old)``: a file's new audio under
    its name) and ``duplicates`` (``(file, song)``: its audio is there under another name), non-audio files
    ``ignored`` in the folders, the near-identical songs found (``copies``, :func:`fplib.copies.find_copies`;
    None: the catalogue is too large to compare them without its index, which ``create_faiss_indexes``
    builds, and compares them), and the catalogue's ``songs`` and ``seconds`` of audio afterwards. Under
    ``torchrun`` only rank 0 (``rank``) has the whole account; the other ranks' results are empty."""

    added: list[Song] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    songs: int = 0
    seconds: float = 0.0
    rank: int = 0
    replaced: list[tuple[Song, Song]] = field(default_factory=list)
    duplicates: list[tuple[str, Song]] = field(default_factory=list)
    copies: list[Copy] | None = field(default_factory=list)


def fingerprint_folders(
    inputs: list[str | os.PathLike],
    catalogue: str | os.PathLike,
    checkpoint: str | os.PathLike,
    device: str = "cpu",
    batch: int = 256,
    workers: int | None = None,
    store_dtype: str | None = None,
    progress: bool = True,
) -> FolderResult:
    """Fingerprint the audio files in ``inputs`` (folders, scanned recursively, and files) with the model
    of ``checkpoint`` into the catalogue folder ``catalogue`` (created if missing; an existing one must
    have been made by the same model and front end). Audio already in the catalogue is skipped, so a run
    that was killed or interrupted continues where it stopped; unusable files are skipped and reported.

    Inputs that do not exist, and folders without audio, are refused before anything is done
    (:class:`~fplib.errors.Refused`). Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank fingerprints
    every ``WORLD_SIZE``-th file into its shard (:func:`shard_folder`), then rank 0 merges the shards into
    the catalogue in the order of the files (the vector ids one process would give) and deletes them."""
    files, problems, ignored = audio.collect_audio(inputs)
    if problems:
        raise Refused(problems, "nothing was fingerprinted")
    rank, world, device = extraction_ranks(device)
    try:
        result = _fingerprint_folders(
            files, Path(catalogue), str(checkpoint), device, batch, workers, store_dtype, progress, rank, world
        )
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    result.ignored = ignored
    return result


def _fingerprint_folders(
    files, catalogue: Path, checkpoint: str, device, batch, workers, store_dtype, progress, rank: int, world: int
) -> FolderResult:
    model, fe = load_model(checkpoint, device)
    desc = model_description(checkpoint)
    merged: set[str] = set()  # under torchrun: audio already merged into the catalogue by an earlier run
    if world > 1 and os.path.lexists(catalogue / "catalogue.sqlite"):
        # the final catalogue is checked before the work, not after it
        with Catalogue(catalogue, fe, desc, store_dtype=store_dtype) as final:
            final.require_store()
            merged = {s.checksum for s in final.songs()}
    if store_dtype and desc.get("kind") == "binary":
        raise ValueError(f"--store_dtype is for float fingerprints; {checkpoint} makes binary codes (stored packed)")
    folder = catalogue if world == 1 else shard_folder(catalogue, rank, world)
    with Catalogue(folder, fe, desc, store_dtype=store_dtype) as cat:
        cat.require_store()
        cat.require_writable()  # before the work, not at its first song
        storage.clean_stale_temps(cat.folder, cat.folder / "vectors")  # what a killed run left behind
        result = fingerprint_files(
            files[rank::world], cat, model, device, batch, progress and rank == 0, workers, skip=merged
        )
    if world > 1:
        result = merge_shards(catalogue, [f for f, _ in files], result, fe, desc, rank, world, store_dtype, progress)
        if rank:
            return FolderResult(rank=rank)
    with Catalogue(catalogue) as cat:
        copies = find_copies(cat)  # the songs added (and any a killed run added) against all
        songs = cat.songs()
    return FolderResult(
        result.added,
        result.already,
        result.skipped,
        [],
        len(songs),
        sum(s.duration for s in songs),
        rank,
        result.replaced,
        result.duplicates,
        copies,
    )


def extraction_ranks(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) of this process: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group
    is joined (Gloo on CPU, NCCL on GPUs, one GPU per local rank); otherwise ``(0, 1, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    from datetime import timedelta

    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    # ranks meet only at the end, after extracting their shards: hours apart on a large catalogue
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(days=7))
    return dist.get_rank(), world, device


def merge_shards(
    catalogue: str | os.PathLike,
    order: list[str],
    result: ExtractResult,
    fe: FrontEnd,
    desc: dict,
    rank: int,
    world: int,
    store_dtype: str | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Under torchrun, once every rank has extracted its shard: rank 0 merges the shards into ``catalogue``
    in the order of the files ``order`` (the vector ids one process would give), then deletes them; returns
    rank 0's account of the whole run (songs added, already there, skipped on every rank)."""
    import torch.distributed as dist

    mine = (result.already, result.skipped, [(f, s.checksum) for f, s in result.duplicates])
    every = [None] * world
    dist.all_gather_object(every, mine)  # also waits for every rank's shard to be complete
    if rank:
        return result
    shards = [shard_folder(catalogue, r, world) for r in range(world)]
    with Catalogue(catalogue, fe, desc, store_dtype=store_dtype) as final:
        merged = merge(final, shards, order=order, progress=progress, replace="same_file")
        found = [(f, final.find_checksum(c)) for _, _, d in every for f, c in d]  # duplicates within a shard
    # renamed aside first: a kill while deleting never leaves half a shard that the next run would open
    parent = shards[0].parent
    doomed = parent.with_name(f".{parent.name}.deleting-{os.getpid()}")
    os.replace(parent, doomed)
    shutil.rmtree(doomed)
    return ExtractResult(
        merged.added,
        [f for a, _, _ in every for f in a],
        [x for _, sk, _ in every for x in sk] + merged.taken,
        merged.replaced,
        [(f, song) for f, song in found if song is not None] + [(new.path, song) for new, song in merged.duplicates],
    )
