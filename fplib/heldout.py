"""Held-out songs only: which songs an evaluation may query, and the checks that refuse a query song a
training run used (by path, or by decoded audio against a ``build_corpus`` corpus or a shipped model's
list of training songs). :func:`query_songs` chooses notebook 05's songs; the real-music benchmark
checks its songs against every model's training corpus (:func:`model_corpora`, :func:`check_not_in_corpus`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fplib import corpus, storage
from fplib.checkpoints import load_checkpoint
from fplib.runs import Run


class HeldOutError(ValueError):
    """A query song that a training run used, or whose audio is a song of a training corpus."""


def check_held_out(query_songs: list[str], training_songs: list[str]) -> None:
    """Refuse query songs that were used in training (compared as resolved file paths, so links made
    by the online split count as their targets). When the training songs come from a corpus that
    ``build_corpus`` made, every song of its manifest is refused, in any split (its validation songs
    are the threshold's calibration negatives), by path or by decoded audio (:func:`fplib.corpus.leaks`)."""
    trained = {str(Path(s).resolve()) for s in training_songs}
    clash = sorted({str(Path(s).resolve()) for s in query_songs} & trained)
    if clash:
        raise HeldOutError(
            f"{len(clash)} query song(s) were in the training split, e.g. {clash[:3]}; evaluate on held-out songs only"
        )
    for manifest in sorted({m for m in map(corpus.find_manifest, {str(Path(s).parent) for s in trained}) if m}):
        check_not_in_corpus(query_songs, corpus.manifest_songs(manifest), str(manifest))


def model_corpora(checkpoint: str | os.PathLike) -> list[tuple[tuple[set[str], set[str]], str]]:
    """The training corpora a model file names: its ``NAME.training.json`` beside it (a shipped model's list
    of training songs), and the ``build_corpus`` corpus its training folders lie in, if that is on this
    machine; as ``(songs, where)`` for :func:`check_not_in_corpus`."""
    out = []
    listed = Path(checkpoint).with_suffix(".training.json")
    if listed.exists():
        out.append((corpus.listed_songs(listed), str(listed)))
    params = load_checkpoint(checkpoint).get("params") or {}
    folders = [params.get(k) for k in ("train_path", "path", "corpus", "input_folder") if params.get(k)]
    for m in sorted({m for m in (corpus.find_manifest(corpus.resolve(f)) for f in folders) if m}):
        out.append((corpus.manifest_songs(m), str(m)))
    return out


def check_not_in_corpus(query_songs: list[str], songs: tuple[set[str], set[str]], where: str) -> None:
    """Refuse query songs whose audio is a song of a training corpus (``songs``: paths and decoded-audio
    SHA-256s, :func:`fplib.corpus.manifest_songs` or :func:`fplib.corpus.listed_songs`)."""
    clash = corpus.leaks(query_songs, songs)
    if clash:
        raise HeldOutError(
            f"{len(clash)} query song(s) are songs of the training corpus ({where}), e.g. "
            f"{clash[:3]}; evaluate on music that no training used"
        )


def training_songs(run_dir: str | os.PathLike) -> list[str]:
    """Every song a run trained on: the online split's ``train_set`` and the static dataset's
    training songs (notebooks 01-03). ``run_dir``: the run's folder or its :class:`fplib.runs.Run`."""
    run = Run(Path(run_dir))
    songs: list[str] = []
    if run.online_split.exists():
        for folder, files in storage.read_json(run.online_split).items():
            if folder.endswith("train_set"):
                songs += files
    for dataset in run.datasets():
        meta = dataset / "generation.json"
        if not meta.exists():
            continue
        root = Path(storage.read_json(meta)["settings"]["input_folder"])
        train = dataset / "train_data.json"
        if train.exists():
            songs += [str(root / s) for s in storage.read_json(train)]
    return songs


@dataclass
class QuerySongs:
    """Which songs notebook 05 queries: ``in_db`` ``{file: catalogue name}`` and ``out_db`` files."""

    in_db: dict[str, str]
    out_db: list[str]
    demo_split: bool  # True: notebook 04's held-out test songs; False: the catalogue's own songs
    left_out: list[str]  # catalogue songs not queried because a training run used them (distractors only)


def _resolved(paths) -> dict[str, str]:
    return {str(Path(p).resolve()): str(p) for p in paths}


def query_songs(songs: list, split: dict | None, trained: list[str], out_of_db: list[str] | None = None) -> QuerySongs:
    """The songs to query for a catalogue's ``songs`` (:class:`fplib.catalogue.Song`).

    If the catalogue holds notebook 04's held-out test songs (``split["in_database"]``), those are the
    in-database songs, and any of them (or of the out-of-database songs) that a training run used is
    refused (:class:`HeldOutError`). Any other catalogue (a user's own folder) is queried from its
    own songs, at their recorded paths, leaving out those a training run used (they stay in the
    database as distractors; if none is left, :class:`HeldOutError`). Out-of-database songs:
    ``out_of_db`` if given, else ``split["out_of_database"]`` (songs synthesised with a seed no
    training used); a training song or a song whose audio is in the catalogue is refused."""
    by_path = {str(Path(s.path).resolve()): s for s in songs}
    split_in = [str(p) for p in (split or {}).get("in_database", [])]
    demo = bool(split_in) and all(str(Path(p).resolve()) in by_path for p in split_in)
    out = [str(p) for p in (out_of_db if out_of_db else (split or {}).get("out_of_database", []))]
    if demo:
        in_db = {p: by_path[str(Path(p).resolve())].name for p in split_in}
        left_out: list[str] = []
        check_held_out(list(in_db) + out, trained)
    else:
        trained_set = set(_resolved(trained))
        in_db = {s.path: s.name for r, s in by_path.items() if r not in trained_set}
        left_out = [s.path for r, s in by_path.items() if r in trained_set]
        if not in_db:
            raise HeldOutError(
                f"all {len(songs)} songs of the catalogue were used in training; add songs no "
                f"training run used (only held-out songs are queried)"
            )
        check_held_out(out, trained)
    if not out:
        raise ValueError(
            "no out-of-database songs to measure false positives with (give a folder of songs "
            "that are not in the catalogue)"
        )
    checksums = {s.checksum for s in songs}
    inside = [p for p in out if str(Path(p).resolve()) in by_path or storage.file_checksum(p) in checksums]
    if inside:
        raise ValueError(f"{len(inside)} out-of-database song(s) are in the catalogue, e.g. {inside[:3]}")
    return QuerySongs(in_db, out, demo, left_out)
