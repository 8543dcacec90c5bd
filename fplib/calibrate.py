"""Calibrating "not in the database" for a catalogue and index, for a stated false-positive rate.

Out-of-database queries of several lengths are cut from audio that is not in the catalogue (the
negatives: :func:`choose_negatives`), degraded with rooms and noises as the evaluation's queries are
(:func:`fplib.queries.render`), and recognised; the threshold is fitted on one half of the negatives
and its false-positive rate measured on the other, held-back half (:func:`calibrate_recognizer`).
:func:`calibrate_index` is what ``calibrate_threshold`` runs: it chooses the negatives, calibrates the
index's recogniser and writes ``NAME.threshold.json`` through :func:`fplib.search.save_threshold`, the
only writer of that file (:func:`fplib.search.load_threshold` is its reader), unless the held-back
rate misses the target (:class:`TargetMissed`).

Negatives, by default: the held-out songs, rooms and noises of the real corpus ``build_corpus`` made
(:func:`corpus_negatives`), else a built-in synthetic corpus (:func:`calibration_corpus`). Songs given
by the caller need only rooms and noises to degrade them with: the built-in ones alone
(:func:`builtin_rooms_noises`, cached), never the built-in songs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fplib import audio, corpus, engine, search, storage
from fplib.data import IRBank, NoiseBank
from fplib.errors import PartlyDone
from fplib.evaluate import Protocol, calibration_scores
from fplib.features import n_windows
from fplib.queries import plan_queries
from fplib.synth.demo import MANIFEST, CorpusSpec, make_demo_corpus

# The built-in negatives: a synthetic corpus (fplib.synth) with a seed that neither the training corpus
# (notebook 01, seed 0) nor the test corpus (notebook 04, seed 1000) uses.
CALIBRATION_SEED = 2000
CALIBRATION_LENGTHS = Protocol.lengths
CALIBRATION_SNRS = Protocol.snrs

# what a shipped model's threshold is calibrated for, on the corpus's held-out songs (calibrate_on_corpus)
SHIPPED_FPR = 0.02
CORPUS_CALIBRATION = {"per_cell": 40, "noise_only_per_length": 16}


def calibration_corpus(
    n_songs: int = 24, root: str | os.PathLike | None = None, progress: bool = True
) -> dict[str, Path]:
    """The built-in out-of-database audio: ``n_songs`` synthetic 30-s songs, 8 noises and 8 simulated
    rooms, seeded with :data:`CALIBRATION_SEED`, generated once and cached (default under
    ``outputs/calibration_corpus/``); returns ``{"music", "noise", "rir"}`` folders."""
    spec = CorpusSpec(
        n_songs=n_songs, song_seconds=30.0, n_noises=8, noise_seconds=20.0, n_irs=8, seed=CALIBRATION_SEED
    )
    root = Path(root) if root is not None else storage.outputs_root() / "calibration_corpus" / f"songs{n_songs}"
    return _generated(root, spec, progress)


def builtin_rooms_noises(root: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Path]:
    """The built-in rooms and noises of :func:`calibration_corpus` (the same files: each item's seed does not
    depend on the number of songs) without its songs, for negatives the caller gives: 8 simulated rooms
    and 8 noises (2.7 MB), generated once and cached (default under ``$FPLIB_CACHE``, ``~/.cache/fplib``:
    derived data, not an output); returns ``{"noise", "rir"}`` folders."""
    spec = CorpusSpec(n_songs=0, song_seconds=30.0, n_noises=8, noise_seconds=20.0, n_irs=8, seed=CALIBRATION_SEED)
    root = Path(root) if root is not None else engine.cache_dir() / "calibration_rooms_noises"
    dirs = _generated(root, spec, progress)
    return {"noise": dirs["noise"], "rir": dirs["rir"]}


def _generated(root: Path, spec: CorpusSpec, progress: bool) -> dict[str, Path]:
    """:func:`make_demo_corpus`, after checking that its folder can be written if it has to be made."""
    if not (root / MANIFEST).is_file():
        storage.check_writable(root, folder=True)
    return make_demo_corpus(root, spec, progress=progress)


@dataclass(frozen=True)
class Negatives:
    """Out-of-database audio to calibrate with: songs, room impulse responses and background noises, and
    where the songs come from (``source``: "corpus", the real corpus's held-out songs; "builtin", the
    synthetic ones of :func:`calibration_corpus`; "given", the caller's files)."""

    music: list[Path | str]
    rooms: list[Path]
    noises: list[Path]
    source: str = "given"
    where: str = ""  # the folder the songs come from ("" for given files)
    extras: str = ""  # the folder of the built-in rooms and noises used with given songs ("" if none)

    @property
    def real(self) -> bool:
        """The real corpus's held-out songs (a shipped model's threshold is calibrated on these)."""
        return self.source == "corpus"

    def describe(self) -> str | None:
        """One line saying which default negatives are used (None for given files)."""
        if self.source == "corpus":
            return (
                f"negatives: {len(self.music)} held-out songs of the real training corpus ({self.where}), "
                f"with its held-out rooms and noises"
            )
        if self.source == "builtin":
            return (
                f"negatives: {len(self.music)} built-in synthetic songs ({self.where}); `make corpus` builds real ones"
            )
        if self.extras:
            builtin = [
                f"{len(files)} built-in {what}"
                for files, what in ((self.rooms, "simulated rooms"), (self.noises, "noises"))
                if files and all(Path(f).is_relative_to(self.extras) for f in files)
            ]
            return (
                f"rooms and noises: {' and '.join(builtin)} (generated once, cached in {self.extras}); "
                f"--rooms and --noises give your own"
            )
        return None


def corpus_negatives(root: str | os.PathLike | None = None) -> Negatives | None:
    """The held-out songs, rooms and noises of the corpus ``build_corpus`` made (default
    ``outputs/corpus``): real out-of-database music for calibration; None when there is no corpus."""
    try:
        folders = corpus.training_folders(root if root is not None else corpus.default_root())
        music = audio.list_audio(folders["val_set"])
        return Negatives(
            music,
            audio.list_audio(folders["val_impulse_responses"]),
            audio.list_audio(folders["val_background_noises"]),
            "corpus",
            os.path.dirname(os.path.dirname(music[0])),
        )
    except (FileNotFoundError, NotADirectoryError, ValueError):  # no corpus, or one without held-out songs
        return None


def choose_negatives(
    negatives: list[str | os.PathLike] | None = None,
    rooms: str | os.PathLike | None = None,
    noises: str | os.PathLike | None = None,
    builtin_songs: int = 24,
    progress: bool = True,
) -> Negatives:
    """The negatives ``calibrate_threshold`` uses: the songs of ``negatives`` (files and folders, scanned
    recursively; a missing path or a folder without audio is a ``ValueError``) if given, else the real
    corpus's held-out songs (:func:`corpus_negatives`), else ``builtin_songs`` built-in synthetic songs
    (:func:`calibration_corpus`, generated once). Rooms and noises: the folders ``rooms`` / ``noises`` if
    given, else the corpus's held-out ones with its songs, else the built-in ones (with given songs, only
    the built-in rooms and noises are made: :func:`builtin_rooms_noises`)."""
    real = corpus_negatives() if negatives is None else None
    builtin, extras = None, ""
    if real is None and negatives is None:
        builtin = calibration_corpus(builtin_songs, progress=progress)
    elif real is None and (rooms is None or noises is None):
        builtin = builtin_rooms_noises(progress=progress)
        extras = str(builtin["rir"].parent)
    if real is not None:
        music, source, where = real.music, "corpus", real.where
    elif negatives is None:
        music, source, where = audio.list_audio(builtin["music"]), "builtin", str(builtin["music"])
    else:
        found, problems, _ = audio.collect_audio(list(negatives))
        if problems:
            raise ValueError("; ".join(f"{p}: {r}" for p, r in problems))
        music, source, where = [f for f, _ in found], "given", ""

    def files(given, default_list: list[Path] | None, kind: str) -> list[Path]:
        if given:
            return audio.list_audio(given)
        return default_list if default_list is not None else audio.list_audio(builtin[kind])

    return Negatives(
        music,
        files(rooms, real.rooms if real else None, "rir"),
        files(noises, real.noises if real else None, "noise"),
        source,
        where,
        extras,
    )


@dataclass(frozen=True)
class LengthCalibration:
    """One query length of a :class:`Calibration`: the threshold there and the held-back measurement."""

    length_s: float
    windows: int
    threshold: float
    n_calibration: int  # queries the threshold was fitted on
    n_test: int  # held-back queries it was measured on
    false_positives: int | None  # held-back queries accepted
    fpr: float | None  # false_positives / n_test (None without held-back queries)

    def to_json(self) -> dict:
        return {
            "length_s": self.length_s,
            "windows": self.windows,
            "threshold": self.threshold,
            "n_calibration": self.n_calibration,
            "n_test": self.n_test,
            "false_positives": self.false_positives,
            "fpr": self.fpr,
        }


@dataclass
class NegativesUsed:
    """The negatives a :class:`Calibration` used: the files of each half, those left out, the rooms and noises."""

    calibration: list[str]  # the half the threshold was fitted on
    test: list[str]  # the held-back half
    cross_fit: bool = False  # the halves also swapped roles
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why it was left out)
    rooms: list[str] = field(default_factory=list)
    noises: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "calibration": list(self.calibration),
            "test": list(self.test),
            "cross_fit": self.cross_fit,
            "skipped": [list(s) for s in self.skipped],
            "rooms": list(self.rooms),
            "noises": list(self.noises),
        }


@dataclass
class Calibration:
    """A threshold calibrated on one half of the negatives and its false-positive rate measured on the
    other (held-back) half, per query length."""

    threshold: search.Threshold
    target_fpr: float
    phases: int
    decision: str
    per_length: list[LengthCalibration]
    measured_fpr: float | None  # over every held-back query
    negatives: NegativesUsed

    @property
    def missed(self) -> list[LengthCalibration]:
        """The lengths whose held-back false-positive rate exceeds the target by more than two standard
        errors (a binomial count of ``n_test`` queries at the target rate)."""
        return [
            r
            for r in self.per_length
            if r.fpr is not None
            and r.n_test
            and r.fpr > self.target_fpr + 2 * math.sqrt(max(self.target_fpr * (1 - self.target_fpr), 1e-4) / r.n_test)
        ]

    def to_json(self) -> dict:
        """The ``NAME.threshold.json`` content (what ``recognize`` and notebook 05 read, plus the measurements)."""
        return {
            "threshold": self.threshold.to_dict(),
            "target_fpr": self.target_fpr,
            "phases": self.phases,
            "decision": self.decision,
            "measured_fpr": self.measured_fpr,
            "per_length": [r.to_json() for r in self.per_length],
            "negatives": self.negatives.to_json(),
        }


def calibrate_on_corpus(
    recognizer,
    root: str | os.PathLike | None = None,
    fpr: float = SHIPPED_FPR,
    seed: int = 0,
    progress: bool = True,
    per_cell: int = CORPUS_CALIBRATION["per_cell"],
) -> Calibration:
    """:func:`calibrate_recognizer` on the corpus's held-out songs, rooms and noises (:func:`corpus_negatives`),
    as a shipped model's default threshold is made: cross-fitted (both halves measured held back, the
    threshold fitted on both), ``per_cell`` queries per length and SNR per half."""
    neg = corpus_negatives(root)
    if neg is None:
        raise FileNotFoundError(
            f"{root or corpus.default_root()}: no corpus to calibrate on; run build_corpus (make corpus)"
        )
    sr = recognizer.fe.sr
    irs, noises = IRBank(neg.rooms, sr, max_s=1.0), NoiseBank(neg.noises, sr)
    return calibrate_recognizer(
        recognizer,
        neg.music,
        irs,
        noises,
        fpr,
        seed=seed,
        progress=progress,
        cross_fit=True,
        per_cell=per_cell,
        noise_only_per_length=CORPUS_CALIBRATION["noise_only_per_length"],
    )


def calibrate_recognizer(
    recognizer,
    negatives: list[str | os.PathLike],
    irs: IRBank,
    noises: NoiseBank,
    fpr: float = Protocol.target_fpr,
    lengths: tuple[float, ...] = CALIBRATION_LENGTHS,
    snrs: tuple[float, ...] = CALIBRATION_SNRS,
    per_cell: int = 4,
    noise_only_per_length: int = 4,
    seed: int = 0,
    progress: bool = True,
    cross_fit: bool = False,
) -> Calibration:
    """Calibrate ``recognizer``'s "not in the database" threshold for a stated false-positive rate.

    Out-of-database queries of each length are cut at random positions from ``negatives`` (songs that
    are not in the recogniser's catalogue; files whose audio is in it, that cannot be decoded, or that are
    silent (no query can be cut from them), are left out and listed), reverberated with ``irs`` and mixed
    with ``noises`` at ``snrs`` as :func:`fplib.queries.render` does, plus noise-only queries. The
    negatives are split in two halves (alternating in sorted order): the threshold is fitted on the first
    (:func:`fplib.search.calibrate`), and the false-positive rate is measured on the held-back second half.
    The recogniser's threshold is set to the result.

    With ``cross_fit`` the halves also swap roles (fit on the second, measure on the first: the rates
    reported are both held-back measurements together), and the threshold kept is fitted on both halves
    pooled, twice the queries of either: a rate's tail over a few dozen songs is what moves a threshold
    most from one set of songs to another."""
    usable, skipped = [], []
    for f in sorted(str(p) for p in negatives):
        try:
            silent = audio.silent_reason(f)
            in_cat = recognizer.catalogue.find_checksum(storage.file_checksum(f))
        except (audio.AudioError, OSError) as e:
            skipped.append((f, getattr(e, "reason", str(e))))
            continue
        if silent:
            skipped.append((f, f"{silent}: no query can be cut from it"))
            continue
        if in_cat is not None:
            skipped.append((f, f"its audio is in the catalogue (song {in_cat.name!r}); negatives must not be"))
            continue
        usable.append(f)
    if len(usable) < 2:
        raise ValueError(
            f"need at least 2 usable out-of-database audio files to calibrate (half to fit, half to "
            f"measure), got {len(usable)}" + (f"; skipped: {skipped}" if skipped else "")
        )
    halves = usable[0::2], usable[1::2]
    fe = recognizer.fe
    recognizer.threshold = None
    scores = []
    for h, files in enumerate(halves):
        queries = plan_queries({}, files, len(irs), list(lengths), list(snrs), per_cell, seed + 10 * h + 1, sr=fe.sr)
        scores.append(
            calibration_scores(
                recognizer,
                queries,
                irs,
                noises,
                list(lengths),
                noise_only_per_length,
                seed + 10 * h + 2,
                progress=progress,
            )
        )
    threshold, per_length, measured = fit_and_measure(scores[0], scores[1], fpr, lengths, fe, cross_fit)
    recognizer.threshold = threshold
    return Calibration(
        threshold,
        fpr,
        recognizer.phases,
        recognizer.decision,
        per_length,
        measured,
        NegativesUsed(
            halves[0], halves[1], cross_fit, skipped, [str(f) for f in irs.files], [str(f) for f in noises.files]
        ),
    )


def fit_and_measure(
    first: dict[int, list[float]],
    second: dict[int, list[float]],
    fpr: float,
    lengths: tuple[float, ...],
    fe,
    cross_fit: bool = False,
) -> tuple[search.Threshold, list[LengthCalibration], float | None]:
    """A threshold fitted for ``fpr`` on the out-of-database scores ``first`` (by query length in windows)
    and its false-positive rate measured on ``second``; with ``cross_fit`` also fitted on ``second`` and
    measured on ``first`` (both measurements reported together), the threshold returned fitted on both.
    Returns ``(threshold, per_length, measured_fpr)`` as :class:`Calibration` holds them."""
    folds = [(first, second, search.calibrate(first, fpr))]
    if cross_fit:
        folds.append((second, first, search.calibrate(second, fpr)))
        threshold = search.calibrate({w: [*first.get(w, []), *second.get(w, [])] for w in {*first, *second}}, fpr)
    else:
        threshold = folds[0][2]
    per_length, fp_all, n_all = [], 0, 0
    for length in lengths:
        w = n_windows(int(round(length * fe.sr)), fe)
        fp = n_test = n_fit = 0
        for fit, test, fitted in folds:
            held = np.asarray(test.get(w, []), dtype=np.float64)
            fp, n_test, n_fit = fp + int((held >= fitted(w)).sum()), n_test + len(held), n_fit + len(fit.get(w, []))
        fp_all, n_all = fp_all + fp, n_all + n_test
        per_length.append(
            LengthCalibration(float(length), w, threshold(w), n_fit, n_test, fp, fp / n_test if n_test else None)
        )
    return threshold, per_length, fp_all / n_all if n_all else None


# -- calibrate_threshold: negatives, calibration and the threshold file in one call ------------------------


class TargetMissed(PartlyDone):
    """The false-positive rate measured on the held-back half misses the target for some lengths, so the
    threshold was not written; ``calibration`` holds what was measured."""

    def __init__(self, message: str, calibration: Calibration):
        super().__init__(message)
        self.calibration = calibration


@dataclass
class IndexCalibration:
    """What :func:`calibrate_index` did: the calibration, the negatives it used and the file it wrote."""

    calibration: Calibration
    negatives: Negatives
    path: Path  # NAME.threshold.json
    seconds: float  # the whole call, negatives included


def check_settings(
    fpr: float, lengths: tuple[float, ...], queries: int | None = None, noise_only: int = 4, builtin_songs: int = 24
) -> None:
    """``ValueError`` for settings :func:`calibrate_index` cannot calibrate with (named by their flags)."""
    if not 0 <= fpr < 1:
        raise ValueError(f"--fpr must be in [0, 1), got {fpr}")
    if (queries is not None and queries < 1) or noise_only < 0 or builtin_songs < 2 or min(lengths) < 1:
        raise ValueError("--queries >= 1, --noise_only >= 0, --builtin_songs >= 2 and --lengths >= 1 s are needed")


def calibrate_index(
    catalogue: str | os.PathLike,
    index: str | os.PathLike,
    model: str | os.PathLike | None = None,
    negatives: list[str | os.PathLike] | None = None,
    rooms: str | os.PathLike | None = None,
    noises: str | os.PathLike | None = None,
    fpr: float = 0.05,
    phases: int = 4,
    decision: str = "margin",
    lengths: tuple[float, ...] = CALIBRATION_LENGTHS,
    snrs: tuple[float, ...] = CALIBRATION_SNRS,
    queries: int | None = None,
    noise_only: int = 4,
    builtin_songs: int = 24,
    nprobe: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    accept_miss: bool = False,
    progress: bool = True,
    say: Callable[[str], None] | None = print,
    show: Callable[[Calibration], None] | None = None,
) -> IndexCalibration:
    """Calibrate "not in the database" for the catalogue and ``index`` (``NAME.index``) and write
    ``NAME.threshold.json`` beside it (:func:`fplib.search.save_threshold`), which ``recognize`` reads.

    Negatives: :func:`choose_negatives` (``say`` is given the line naming the default ones). The model
    (default: the shipped one) must be the one that made the catalogue. ``queries`` per length and SNR in
    each half (default: 40 with the real corpus's held-out songs, cross-fitted; 10 otherwise),
    ``noise_only`` noise-only queries per length in each half. Settings are checked before anything is
    done (``ValueError``). If the held-back false-positive rate misses ``fpr`` for some length
    (:attr:`Calibration.missed`), nothing is written and :class:`TargetMissed` is raised, unless
    ``accept_miss``. The folder of ``index`` must be writable (checked first: the threshold is written
    there at the end); ``show`` is given the calibration before anything is written, so that a failed
    write loses no result."""
    check_settings(fpr, tuple(lengths), queries, noise_only, builtin_songs)
    storage.check_writable(Path(index).parent, folder=True)
    storage.clean_stale_temps(Path(index).parent)  # what a killed calibration's write left behind
    t0 = time.perf_counter()
    neg = choose_negatives(negatives, rooms, noises, builtin_songs, progress)
    line = neg.describe()
    if line and say is not None:
        say(line)
    irs, bank = IRBank(neg.rooms, audio.SR, max_s=1.0), NoiseBank(neg.noises, audio.SR)
    rec = search.recognizer_from_files(
        model, catalogue, index, no_threshold=True, nprobe=nprobe, phases=phases, decision=decision, device=device
    )
    calibrated_for = search.threshold_record(index)  # the index, catalogue and model as calibrated (checked on use)
    cal = calibrate_recognizer(
        rec,
        neg.music,
        irs,
        bank,
        fpr,
        tuple(lengths),
        tuple(snrs),
        queries or (40 if neg.real else 10),
        noise_only,
        seed,
        progress,
        cross_fit=neg.real,
    )
    out = search.threshold_path(index)
    if show is not None:
        show(cal)
    if cal.missed and not accept_miss:
        raise TargetMissed(
            f"the false-positive rate measured on the held-back half misses the {fpr:.1%} aimed at for "
            f"{', '.join(str(r.length_s) + ' s' for r in cal.missed)} (beyond two standard errors of "
            f"{', '.join(str(r.n_test) for r in cal.missed)} queries); {out} was not written. Give more "
            f"negatives (--negatives, --queries), or --accept_miss to write it anyway",
            cal,
        )
    search.save_threshold(index, cal.to_json(), calibrated_for)
    return IndexCalibration(cal, neg, out, time.perf_counter() - t0)
