"""Evaluation (NAFP's protocol): the queries of :mod:`fplib.queries` run through the neural recogniser
and the landmark baseline on the same database, and scored; out-of-database queries measure false
positives. The whole procedure (calibrate each neural system's threshold, query every system, score)
is :func:`benchmark`, its numbers a :class:`Protocol`: notebook 05 and ``benchmarks/real_music/run.py``
both run it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fplib import audio, storage
from fplib import index as fpindex
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model, model_description
from fplib.codes import dim
from fplib.data import IRBank, NoiseBank, item_rng
from fplib.extraction import extract
from fplib.features import n_windows
from fplib.landmark import Landmark
from fplib.queries import CONDITIONS, Query, plan_queries, render, with_conditions
from fplib.runs import Run
from fplib.search import Recognizer
from fplib.search import calibrate as fit_threshold
from fplib.train import LEARNED_OVER_CHANCE, best_epoch, read_metrics, times_chance


def run(
    queries: list[Query],
    irs: IRBank,
    noises: NoiseBank,
    systems: dict[str, object] | None = None,
    *,
    neural=None,
    landmark=None,
    method: str = "sequence",
    progress: bool = True,
) -> list[dict]:
    """Every query through every system: one row per query and system, labelled with the system's name.

    ``systems``: ``{name: system}``, each a neural recogniser (:class:`fplib.search.Recognizer`, anything
    with ``recognize``) or the landmark baseline (:class:`fplib.landmark.Landmark`, anything with
    ``match``), run in that order. ``neural`` / ``landmark``: shorthands for ``{"neural": neural}`` and
    ``{"audfprint": landmark}``."""
    systems = _systems(systems, neural, landmark)
    rows = []
    for q in tqdm(queries, desc="queries", unit="query", disable=not progress):
        wav = render(q, irs, noises)
        for name, system in systems.items():
            if _is_neural(system):
                r = system.recognize(wav, method=method, top=3)
                rows.append(
                    {
                        "system": name,
                        "query": q.id,
                        "predicted": [m.name for m in r.matches],
                        "offsets": [m.offset_s for m in r.matches],
                        "scores": [m.score for m in r.matches],
                        "score": r.best.score if r.best else None,
                        "confidence": r.confidence,
                        "accepted": r.in_database,
                        **r.timings_ms,
                    }
                )
            else:
                t0 = time.perf_counter()
                ms = system.match(wav)
                dt = 1000 * (time.perf_counter() - t0)
                rows.append(
                    {
                        "system": name,
                        "query": q.id,
                        "predicted": [m.name for m in ms],
                        "offsets": [m.offset_s for m in ms],
                        "score": ms[0].count if ms else None,
                        "accepted": bool(ms),
                        "total_ms": dt,
                    }
                )
    return rows


def _is_neural(system) -> bool:
    return hasattr(system, "recognize")


def _systems(systems: dict[str, object] | None, neural=None, landmark=None) -> dict[str, object]:
    out = dict(systems or {})
    for name, system in (("neural", neural), ("audfprint", landmark)):
        if system is not None:
            if name in out:
                raise ValueError(f"two systems named {name!r}")
            out[name] = system
    for name, system in out.items():
        if not _is_neural(system) and not hasattr(system, "match"):
            raise TypeError(
                f"system {name!r}: a recogniser (recognize) or a landmark baseline (match), got {type(system).__name__}"
            )
    return out


def is_hit(q: Query, name: str, offset_s: float, tolerance_s: float = 0.5) -> bool:
    """The right song, and an offset within ``tolerance_s`` of the query's start or of a repeat of the
    same audio in the song (:func:`find_repeats`)."""
    return name == q.name and any(abs(offset_s - t) <= tolerance_s for t in (q.start_s, *q.repeats))


def score(queries: list[Query], rows: list[dict], tolerance_s: float = 0.5, per_snr: bool = True) -> list[dict]:
    """Per system, length and SNR (``per_snr=False``: per system and length, all SNRs pooled, with
    ``snr_db`` None): top-1 hit (right song, offset within ``tolerance_s`` of the query's start or of
    a repeat of the same audio in the song, :func:`is_hit`), top-3, song-only accuracy (all over
    in-database queries, a rejected query counting as a miss), the top-1 hit before the decision
    threshold (``ranked1``: the right answer ranked first, accepted or not; it separates the
    fingerprints' quality from the threshold's), and the false-positive rate (accepted
    out-of-database queries); ``ms_per_query`` over all the cell's queries."""
    by_id = {q.id: q for q in queries}
    cells: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        q = by_id[r["query"]]
        key = (r["system"] + (f" @{q.condition}" if q.condition else ""), q.length_s, q.snr_db if per_snr else None)
        c = cells[key]
        if q.in_database:
            hits = [is_hit(q, name, off, tolerance_s) for name, off in zip(r["predicted"], r["offsets"])]
            c["top1"].append(bool(r["accepted"] and hits[:1] == [True]))
            c["ranked1"].append(hits[:1] == [True])
            c["top3"].append(bool(r["accepted"] and any(hits[:3])))
            c["song"].append(bool(r["accepted"] and r["predicted"][:1] == [q.name]))
        else:
            c["fp"].append(bool(r["accepted"]))
        c["ms"].append(r.get("total_ms", r.get("frontend_model_ms", 0) + r.get("search_ms", 0)))
        if "frontend_model_ms" in r:
            c["frontend_model_ms"].append(r["frontend_model_ms"])
            c["search_ms"].append(r["search_ms"])
    table = []
    for (system, length, snr), c in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        table.append(
            {
                "system": system,
                "length_s": length,
                "snr_db": snr,
                "n": len(c["top1"]),
                "top1": _mean(c["top1"]),
                "top3": _mean(c["top3"]),
                "song": _mean(c["song"]),
                "ranked1": _mean(c["ranked1"]),
                "fp_rate": _mean(c["fp"]),
                "n_out": len(c["fp"]),
                "ms_per_query": _mean(c["ms"]),
                "frontend_model_ms": _mean(c["frontend_model_ms"]),
                "search_ms": _mean(c["search_ms"]),
            }
        )
    return table


def headline(
    queries: list[Query], rows: list[dict], db_bytes_per_second: dict[str, float], tolerance_s: float = 0.5
) -> list[dict]:
    """One row per system and query length, all SNRs pooled: ``n`` / ``n_out`` (in- / out-of-database
    queries), ``top1``, ``ranked1``, ``fp_rate``, ``ms_per_query`` and ``db_bytes_per_s`` (the
    system's database size per second of catalogued audio, from ``db_bytes_per_second``)."""
    keep = ("system", "length_s", "n", "n_out", "top1", "ranked1", "fp_rate", "ms_per_query")
    system_order = {s: i for i, s in enumerate(db_bytes_per_second)}
    out = [
        {**{k: r[k] for k in keep}, "db_bytes_per_s": db_bytes_per_second.get(r["system"])}
        for r in score(queries, rows, tolerance_s, per_snr=False)
    ]
    return sorted(out, key=lambda r: (system_order.get(r["system"], len(system_order)), r["length_s"]))


def confidences(
    queries: list[Query], rows: list[dict], system: str = "neural", tolerance_s: float = 0.5, condition: str = ""
) -> dict[float, dict[str, list[float]]]:
    """The confidence the decision compared with the threshold, by query length: ``right`` (in the
    database, right answer ranked first), ``wrong`` (in the database, anything else ranked first) and
    ``out`` (out-of-database queries), for the queries of one ``condition`` (default: the plain ones,
    without codec or speed change). Queries rejected before any search (silent) are left out."""
    by_id = {q.id: q for q in queries}
    out: dict[float, dict[str, list[float]]] = defaultdict(lambda: {"right": [], "wrong": [], "out": []})
    for r in rows:
        if r["system"] != system or r.get("confidence") is None or by_id[r["query"]].condition != condition:
            continue
        q = by_id[r["query"]]
        if not q.in_database:
            kind = "out"
        else:
            kind = "right" if r["predicted"] and is_hit(q, r["predicted"][0], r["offsets"][0], tolerance_s) else "wrong"
        out[q.length_s][kind].append(float(r["confidence"]))
    return dict(sorted(out.items()))


def worked_query(
    queries: list[Query], rows: list[dict], length_s: float, system: str = "neural", tolerance_s: float = 0.5
) -> Query:
    """An in-database query of ``length_s`` seconds (or the nearest length) to show in detail: the
    noisiest plain one (no codec or speed change) whose answer is a top-1 hit, else the first one."""
    plain = [q for q in queries if q.in_database and not q.condition]
    lengths = sorted({q.length_s for q in plain})
    if not lengths:
        raise ValueError("no in-database queries")
    length = min(lengths, key=lambda x: abs(x - length_s))
    pool = [q for q in plain if q.length_s == length]
    res = {r["query"]: r for r in rows if r["system"] == system}
    hits = [
        q
        for q in pool
        if q.id in res
        and res[q.id]["accepted"]
        and res[q.id]["predicted"]
        and is_hit(q, res[q.id]["predicted"][0], res[q.id]["offsets"][0], tolerance_s)
    ]
    return min(hits, key=lambda q: (q.snr_db, q.id)) if hits else pool[0]


def _mean(x: list) -> float | None:
    return float(np.mean(x)) if len(x) else None


def summary(table: list[dict], key: str = "top1") -> dict[str, dict[str, float]]:
    """``{system: {"<length>s": mean of key over SNRs}}`` for a compact comparison."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in table:
        if r[key] is not None:
            out[r["system"]][f"{r['length_s']:g}s"].append(r[key])
    return {s: {k: float(np.mean(v)) for k, v in d.items()} for s, d in out.items()}


def calibration_scores(
    recognizer,
    queries: list[Query],
    irs: IRBank,
    noises: NoiseBank,
    lengths: list[float],
    noise_only_per_length: int,
    seed: int,
    progress: bool = True,
) -> dict[int, list[float]]:
    """Best-candidate scores of out-of-database queries and of noise-only queries, by query length in
    windows (scores are reported whatever the recogniser's current threshold)."""
    fe = recognizer.fe
    by_id = {q.id: q for q in queries}
    scores: dict[int, list[float]] = defaultdict(list)
    for r in run(queries, irs, noises, neural=recognizer, progress=progress):
        if r["confidence"] is not None:
            scores[n_windows(int(round(by_id[r["query"]].length_s * fe.sr)), fe)].append(r["confidence"])
    for length in lengths:
        for j in range(noise_only_per_length):
            wav = noises.sample(item_rng(seed, "noise-only", length, j), int(round(length * fe.sr)))
            r = recognizer.recognize(wav.copy())
            if r.confidence is not None:
                scores[n_windows(len(wav), fe)].append(r.confidence)
    return dict(scores)


# -- the evaluation protocol: notebook 05 and the real-music benchmark ------------------------------


@dataclass(frozen=True)
class Protocol:
    """The numbers of an evaluation (:func:`benchmark`). Notebook 05 runs the defaults (its ``protocol``
    parameter overrides fields); the real-music benchmark overrides a few (``benchmarks/real_music``).

    Seeds: test queries ``seed``, calibration queries ``seed + 1``, noise-only queries ``seed + 2``."""

    lengths: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0)  # query lengths (s)
    snrs: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0)  # background-noise SNRs (dB)
    queries_per_cell: int = 6  # test queries per (length, SNR) from songs in the database, as many from songs out
    calibration_per_cell: int | None = None  # calibration queries per (length, SNR); None: 2 x queries_per_cell
    noise_only_per_length: int | None = None  # noise-only calibration queries per length; None: calibration_per_cell
    bandlimit_share: float = 0.0  # share of queries band-limited as a phone microphone would
    target_fpr: float = 0.05  # false-positive rate each neural system's threshold is calibrated for
    tolerance_s: float = 0.5  # a hit's offset is within this of the query's start (or of a repeat)
    method: str = "sequence"  # neural recognisers: "sequence" (NAFP's alignment) or "vote"
    landmark_density: float = 100.0  # the audfprint baseline's hashes per second (its default 20 misses noisy queries)
    seed: int = 0  # query positions, rooms and noises
    conditions: tuple[str, ...] = ()  # CONDITIONS: each test query again through a codec or at another speed

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown query condition(s) {bad}; known: {', '.join(CONDITIONS)}")
        object.__setattr__(self, "lengths", tuple(float(x) for x in self.lengths))
        object.__setattr__(self, "snrs", tuple(float(x) for x in self.snrs))
        if not self.lengths or min(self.lengths) <= 0:
            raise ValueError(f"lengths: at least one, all > 0 s, got {self.lengths}")
        if not self.snrs:
            raise ValueError("snrs: at least one SNR")
        if self.queries_per_cell < 1 or self.n_calibration < 1 or self.n_noise_only < 0:
            raise ValueError(
                f"queries per cell must be >= 1 (noise-only >= 0), got {self.queries_per_cell}, "
                f"{self.calibration_per_cell}, {self.noise_only_per_length}"
            )
        if not 0.0 <= self.bandlimit_share <= 1.0 or not 0.0 <= self.target_fpr < 1.0 or self.tolerance_s < 0:
            raise ValueError(f"need 0 <= bandlimit_share <= 1, 0 <= target_fpr < 1, tolerance_s >= 0: {self}")
        if self.method not in ("sequence", "vote"):
            raise ValueError(f"method must be 'sequence' or 'vote', got {self.method!r}")

    @property
    def n_calibration(self) -> int:
        """Calibration queries per (length, SNR)."""
        return self.calibration_per_cell if self.calibration_per_cell is not None else 2 * self.queries_per_cell

    @property
    def n_noise_only(self) -> int:
        """Noise-only calibration queries per length."""
        return self.noise_only_per_length if self.noise_only_per_length is not None else self.n_calibration

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def split_out_of_database(out_db: list[str]) -> tuple[list[str], list[str]]:
    """Out-of-database songs -> (calibration songs, test songs): alternating, in the given order, so that
    songs from different sources (folders sorted by path) fall on both sides."""
    out_db = [str(p) for p in out_db]
    return out_db[0::2], out_db[1::2]


def landmark_system(songs: list, density: float = Protocol.landmark_density, sr: int = audio.SR):
    """The audfprint baseline (:class:`fplib.landmark.Landmark`) holding ``songs`` (catalogue
    :class:`fplib.catalogue.Song` rows: ``name``, ``path``), at ``density`` hashes per second."""
    lm = Landmark(density=density)
    for s in songs:
        lm.add(s.name, audio.load(s.path, sr), sr)
    return lm


def db_bytes_per_second(systems: dict[str, object], songs: list) -> dict[str, float]:
    """Each system's database size per second of catalogued audio: a neural system's index bytes per
    fingerprint over its hop, the landmark baseline's hash table over the ``songs``' duration."""
    audio_s = sum(s.duration for s in songs)
    out = {}
    for name, system in systems.items():
        if _is_neural(system):
            out[name] = fpindex.bytes_per_vector(system.index) / system.fe.hop_s
        else:
            out[name] = system.bytes_per_second(audio_s)
    return out


def untrained_models(run: Run | str | os.PathLike) -> dict[str, str]:
    """Models notebooks 02 and 03 trained in ``run`` whose best validation top-1 (in the run's metrics log)
    stayed under :data:`fplib.train.LEARNED_OVER_CHANCE` times chance: ``{folder key: why}``. :func:`trained_systems`
    leaves them out, so that no comparison shows an untrained model as a family's result."""
    run = run if isinstance(run, Run) else Run(Path(run))
    out = {}
    for key, ckpt in run.trained().items():
        try:
            history = read_metrics(ckpt.parent)
        except FileNotFoundError:  # a checkpoint made elsewhere: nothing to judge by
            continue
        if not history or "val_pairs" not in history[0]:
            continue
        n, best = best_epoch(history)
        if times_chance(best) < LEARNED_OVER_CHANCE:
            out[key] = (
                f"best validation top-1 {best['val_top1']:.3f} is {times_chance(best):.1f}x chance "
                f"(epoch {n}), under {LEARNED_OVER_CHANCE:g}x: it did not learn in this budget"
            )
    return out


def trained_systems(
    run: Run | str | os.PathLike,
    catalogue,
    skip_sha256: str | None = None,
    device: str = "cpu",
    progress: bool = False,
    **recognizer_kw,
) -> dict[str, object]:
    """Recognisers of every other model notebooks 02 and 03 trained in ``run`` (:meth:`fplib.runs.Run.trained`),
    each with its own catalogue of ``catalogue``'s songs under the same names and its own index (float or
    binary, by the model's kind), in ``run.compare_dir(name)``; for a side-by-side :func:`benchmark`. The
    model whose checkpoint has SHA-256 ``skip_sha256`` (the catalogue's own) is left out. Names: the
    variant and how it was trained, e.g. ``attn_small online``. Catalogues and indexes already built for
    the same checkpoint are reused (extraction resumes). Models that did not learn
    (:func:`untrained_models`) are left out."""
    run = run if isinstance(run, Run) else Run(Path(run))
    songs = catalogue.songs()
    systems = {}
    untrained = untrained_models(run)
    for key, ckpt in run.trained().items():
        if key in untrained or (skip_sha256 and storage.file_checksum(ckpt) == skip_sha256):
            continue
        model, fe = load_model(ckpt, device)
        desc = model_description(ckpt, model)
        name = f"{model.variant_name} {key.split('_')[0]}"
        folder = run.compare_dir(name.replace(" ", "_"))
        if (folder / "catalogue").exists():  # made by an earlier run of this comparison: the same model?
            with Catalogue(folder / "catalogue") as old:
                stale = old.model.get("sha256") != desc["sha256"]
            if stale:
                shutil.rmtree(folder)
        cat = Catalogue(folder / "catalogue", fe, desc)
        extract(
            [s.path for s in songs], cat, model, device=device, progress=progress, names={s.path: s.name for s in songs}
        )
        first = cat.vectors(cat.songs()[0])
        path = fpindex.build(cat, "compare", folder / "index", d=dim(first, cat.kind))
        systems[name] = Recognizer(model, cat, path, device=device, **recognizer_kw)
    return systems


@dataclass
class Benchmark:
    """What :func:`benchmark` did and found."""

    protocol: Protocol
    queries: list[Query]  # the test queries (in and out of the database)
    rows: list[dict]  # one per query and system (:func:`run`)
    table: list[dict]  # per system, length and SNR (:func:`score`)
    calibration_queries: list[Query]
    calibration_scores: dict[str, dict[int, list[float]]]  # per calibrated system: scores by query windows
    thresholds: dict[str, object]  # per calibrated system: its fplib.search.Threshold
    calibration_songs: list[str]
    test_out_songs: list[str]

    def headline(self, db_bytes_per_second: dict[str, float]) -> list[dict]:
        """One row per system and length, SNRs pooled (:func:`headline`); systems in the order given."""
        return headline(self.queries, self.rows, db_bytes_per_second, self.protocol.tolerance_s)

    def summary(self, key: str = "top1") -> dict[str, dict[str, float]]:
        return summary(self.table, key)

    def confidences(self, system: str = "neural") -> dict[float, dict[str, list[float]]]:
        return confidences(self.queries, self.rows, system, self.protocol.tolerance_s)

    def worked_query(self, length_s: float, system: str = "neural") -> Query:
        return worked_query(self.queries, self.rows, length_s, system, self.protocol.tolerance_s)


def benchmark(
    systems: dict[str, object],
    in_db: dict[str, str],
    out_db: list[str],
    irs: IRBank,
    noises: NoiseBank,
    protocol: Protocol = Protocol(),
    calibrate: bool = True,
    progress: bool = True,
) -> Benchmark:
    """The evaluation: every system on the same queries.

    ``systems``: ``{name: system}``: neural recognisers (:class:`fplib.search.Recognizer`, several models can
    be compared in one call, each with its own catalogue and index) and the landmark baseline
    (:func:`landmark_system`). ``in_db``: the songs to query ``{file: catalogue name}``; ``out_db``: songs in
    no system's database, split alternately (:func:`split_out_of_database`) into calibration and test songs.

    1. Calibration (``calibrate``): ``protocol.n_calibration`` queries per length and SNR from the
       calibration songs plus ``protocol.n_noise_only`` noise-only queries per length; each neural
       system's threshold is set (on the recogniser itself) to accept at most ``protocol.target_fpr``
       of them per query length (:func:`fplib.search.calibrate`).
    2. Test queries: ``protocol.queries_per_cell`` per length and SNR from ``in_db`` and as many from
       the test songs out of the database (:func:`plan_queries`), through every system (:func:`run`).
    3. Scoring per system, length and SNR (:func:`score`); the test queries again under each of
       ``protocol.conditions`` (codecs, speed changes: :func:`with_conditions`) are scored as systems of
       their own, ``"NAME @CONDITION"``. Systems that already hold a threshold keep it when
       ``calibrate`` is False (a shipped model's default)."""
    systems = _systems(systems)
    p = protocol
    calib_songs, test_out = split_out_of_database(out_db)
    calib_queries: list[Query] = []
    scores: dict[str, dict[int, list[float]]] = {}
    thresholds: dict[str, object] = {}
    neural = {name: s for name, s in systems.items() if _is_neural(s)}
    if calibrate and neural:
        calib_queries = plan_queries(
            {}, calib_songs, len(irs), list(p.lengths), list(p.snrs), p.n_calibration, p.seed + 1, p.bandlimit_share
        )
        for name, rec in neural.items():
            scores[name] = calibration_scores(
                rec, calib_queries, irs, noises, list(p.lengths), p.n_noise_only, p.seed + 2, progress=progress
            )
            rec.threshold = thresholds[name] = fit_threshold(scores[name], p.target_fpr)
    queries = plan_queries(
        in_db, test_out, len(irs), list(p.lengths), list(p.snrs), p.queries_per_cell, p.seed, p.bandlimit_share
    )
    queries = with_conditions(queries, p.conditions)
    rows = run(queries, irs, noises, systems, method=p.method, progress=progress)
    return Benchmark(
        p, queries, rows, score(queries, rows, p.tolerance_s), calib_queries, scores, thresholds, calib_songs, test_out
    )
