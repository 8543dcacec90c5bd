"""Long recordings: every catalogue song of 10- to 60-minute recordings, where it starts and ends, found by
fplib's segmenter (:func:`fplib.segments.segment_file`) beside audfprint's multiple-match mode.

    python benchmarks/real_music/setup_data.py          # once: the real-music data (downloads)
    python benchmarks/long_recordings.py                 # a 10- and a 60-minute recording (--minutes 10 60)
    python benchmarks/long_recordings.py --quick         # one 10-minute recording of synthetic stand-ins

Protocol (all seeded):
- songs: the real-music benchmark's held-out music (hedgewars-data, colobot-common-sounds), split in two
  halves: the catalogue's songs, and songs outside it; those outside are split again, half to play in the
  recordings as unknown music, half as the negatives the threshold is calibrated on. The catalogue also
  holds the benchmark's training music (supertux-data) as distractors (never played: a model may have
  trained on it);
- the catalogue: built with the shipped model as a user would (``fplib.extraction.fingerprint_folders``,
  ``fplib.db.build_index``, ``fplib.calibrate.calibrate_index`` on the negatives, the benchmark's simulated
  rooms and its ambient noises, the command's defaults: 5 % false positives, margin decision, 4 phases);
- recordings (``long_mix.py``): excerpts of 1 to 4 minutes of catalogue songs, about a quarter of the
  excerpts from songs outside the catalogue, joined by crossfades (3-8 s), cuts, gaps of silence and speech
  (``espeak-ng``); some songs 2-4 % fast, through a room, under noise (20, 10 or 5 dB) or under talk; one
  song played twice. Written under ``outputs/long_recordings/NAME/`` (16-bit WAV, 8 kHz) with the truth
  beside each as JSON;
- systems: fplib's segmenter on the file (``segment_file``, default settings); audfprint's multiple-match
  mode (``audfprint2``, the whole recording as one query, ``--max-matches 100 --find-time-range``, its
  default ``--min-count 5`` and density 20, the same audio at 8 kHz, its hash table over the same
  catalogue songs, ``--maxtime`` raised to 2^15 frames so songs up to 12 minutes fit); its matches of one
  song whose time ranges overlap (or are within 2 s) are joined into one segment. Each system runs on
  each recording in a fresh process: seconds (loading apart), times real time, and peak resident memory
  (``VmHWM``), next to the resident memory once loaded;
- scores, on the catalogue songs of 10 s or more in the truth: recall (a truth segment is found when a
  segment naming its song overlaps it); precision (a named segment is right when a truth segment of its
  song overlaps it; all named segments count, ``precision >= 10 s`` only those of 10 s or more); time
  recall and precision (seconds named right over seconds of catalogue songs, over seconds named); the
  boundary error of each found segment (start: the earliest overlapping segment of the song, end: the
  latest; zero anywhere inside a crossfade, the distance to it outside), median over starts and ends; the
  offset error (where in the song the segment says it starts); segments split in pieces; seconds named
  inside unknown stretches; recall per kind of segment (fast, talk over, room, noise 5 dB, crossfade in,
  played twice, plain).

Goals (issue 28): recall >= 95 % at precision >= 99 %, median boundary error < 1 s, peak memory the same
for 10 and 60 minutes (under 1 GB), >= 100x real time on 2 cores. Results: a table, and
``benchmarks/real_music/results/long/NAME/results.json`` with every segment found.

``--quick``: one 10-minute recording made of a stand-in of the data (``standin.py``: synthetic songs of
90 s and noises in the packages' layout, made once), the same path end to end; its figures say nothing
about real music.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "real_music"))

RESULTS = HERE / "real_music" / "results" / "long"
MAXTIME = 1 << 15  # audfprint's time field: 2^15 frames of 23.2 ms, 12.7 minutes
AUDFPRINT = {"density": 20.0, "min_count": 5, "max_matches": 100, "join_s": 2.0}
MIN_S = 10.0  # truth segments scored
TAGS = ("plain", "fast", "talk over", "room", "noise 5 dB", "crossfade in", "played twice")


# -- the process of one system on one recording ------------------------------------------------------


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(job: dict) -> dict:
    """Run one system on one recording (in a process of its own): its segments, times and memory."""
    from fplib import audio

    t0 = time.perf_counter()
    if job["system"] == "fplib":
        from fplib import search
        from fplib.segments import segment_file

        rec = search.recognizer_from_files(None, job["catalogue"], job["index"])
        load_s, rss_loaded = time.perf_counter() - t0, _status("VmRSS")
        t1 = time.perf_counter()
        segs = [s.to_json() for s in segment_file(rec, job["recording"])]
        threshold = rec.threshold.to_dict() if hasattr(rec.threshold, "to_dict") else rec.threshold
        extra = {"threshold_source": str(rec.threshold_source), "threshold": threshold}
    else:
        from audfprint2.core import analyzer

        with open(job["table"], "rb") as f:
            table = pickle.load(f)
        an = analyzer.Analyzer(density=AUDFPRINT["density"])
        load_s, rss_loaded = time.perf_counter() - t0, _status("VmRSS")
        t1 = time.perf_counter()
        segs = audfprint_segments(an, table, audio.load(job["recording"], audio.SR))
        extra = dict(AUDFPRINT)
    run_s = time.perf_counter() - t1
    return {
        "segments": segs,
        "load_s": load_s,
        "run_s": run_s,
        "rss_loaded": rss_loaded,
        "peak_rss": _status("VmHWM"),
        **extra,
    }


def audfprint_matcher():
    from audfprint2.core import matcher

    m = matcher.Matcher()
    m.threshcount, m.max_returns, m.find_time_range = AUDFPRINT["min_count"], AUDFPRINT["max_matches"], True
    return m


def audfprint_hashes(an, wav: np.ndarray, sr: int) -> np.ndarray:
    import soxr
    from audfprint2.core import analyzer

    x = soxr.resample(wav.astype(np.float32), sr, an.target_sr).astype(np.float64)
    h = analyzer.landmarks2hashes(an.peaks2landmarks(an.find_peaks(x, an.target_sr)))
    return np.unique(h, axis=0) if len(h) else np.zeros((0, 2), np.int64)


def audfprint_segments(an, table, wav: np.ndarray) -> list[dict]:
    """audfprint's multiple matches of the whole recording as segments: ``--max-matches`` rows of (song,
    aligned hashes, time skew, ..., first and last matching time), a song's rows whose time ranges overlap
    or nearly touch joined into one segment."""
    from fplib import audio

    h = audfprint_hashes(an, wav, audio.SR)
    if not len(h):
        return []
    m = audfprint_matcher()
    rows = m.match_hashes(table, h)[: m.max_returns]
    hop = an.n_hop / an.target_sr
    raw = sorted(
        (
            {
                "song": table.names[int(r[0])],
                "start_s": float(r[5]) * hop,
                "end_s": float(r[6]) * hop,
                "offset_s": float(r[5] + r[2]) * hop,
                "confidence": int(r[1]),
            }
            for r in rows
        ),
        key=lambda s: s["start_s"],
    )
    out: list[dict] = []
    for s in raw:
        same = next(
            (o for o in out if o["song"] == s["song"] and s["start_s"] <= o["end_s"] + AUDFPRINT["join_s"]), None
        )
        if same is None:
            out.append(dict(s))
        else:
            same["end_s"] = max(same["end_s"], s["end_s"])
            same["confidence"] = max(same["confidence"], s["confidence"])
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()} for s in out]


def run_child(job: dict, out: Path) -> dict:
    """``job`` in a fresh process (this script with ``--child``); its result, also written to ``out``."""
    job_path = out.with_suffix(".job.json")
    job_path.write_text(json.dumps(job))
    r = subprocess.run([sys.executable, __file__, "--child", str(job_path), str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{job['system']} on {job['recording']} failed:\n{r.stderr[-3000:]}")
    return json.loads(out.read_text())


# -- scoring -----------------------------------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _dist(x: float, lo: float, hi: float) -> float:
    return max(0.0, lo - x, x - hi)


def score(truth: list[dict], pred: list[dict]) -> dict:
    """The figures of one system on one recording (the module's docstring); ``pred``'s songs are the truth's
    names (paths relative to the data folder)."""
    songs = [t for t in truth if t["song"] is not None and t["end_s"] - t["start_s"] >= MIN_S]
    named = [p for p in pred if p["song"] is not None]
    found, errors, starts, ends, offsets, split, missed = 0, [], [], [], [], 0, []
    by_tag = {k: [0, 0] for k in TAGS}
    for t in songs:
        hits = [
            p
            for p in named
            if p["song"] == t["song"] and _overlap(p["start_s"], p["end_s"], t["start_s"], t["end_s"]) > 0
        ]
        for tag in t["tags"]:
            by_tag.setdefault(tag, [0, 0])[1] += 1
            by_tag[tag][0] += bool(hits)
        if not hits:
            missed.append({k: t[k] for k in ("song", "start_s", "end_s", "tags")})
            continue
        found += 1
        split += len(hits) > 1
        first, last = min(hits, key=lambda p: p["start_s"]), max(hits, key=lambda p: p["end_s"])
        starts.append(_dist(first["start_s"], *t["start_range"]))
        ends.append(_dist(last["end_s"], *t["end_range"]))
        if first.get("offset_s") is not None:
            at = t["offset_s"] + t["speed"] * (first["start_s"] - t["start_s"])
            offsets.append(abs(first["offset_s"] - at))
    right = [
        p
        for p in named
        if any(
            t["song"] == p["song"] and _overlap(p["start_s"], p["end_s"], t["start_s"], t["end_s"]) > 0 for t in truth
        )
    ]
    long_named = [p for p in named if p["end_s"] - p["start_s"] >= MIN_S]
    long_right = [p for p in right if p["end_s"] - p["start_s"] >= MIN_S]
    song_s = sum(t["end_s"] - t["start_s"] for t in songs)
    named_s = sum(p["end_s"] - p["start_s"] for p in named)
    right_s = sum(
        _overlap(p["start_s"], p["end_s"], t["start_s"], t["end_s"])
        for p in named
        for t in truth
        if t["song"] == p["song"]
    )
    in_unknown = sum(
        _overlap(p["start_s"], p["end_s"], t["start_s"], t["end_s"]) for p in named for t in truth if t["song"] is None
    )
    errors = starts + ends
    med = lambda x: float(np.median(x)) if x else None  # noqa: E731
    return {
        "truth_songs": len(songs),
        "found": found,
        "recall": found / len(songs) if songs else None,
        "named": len(named),
        "right": len(right),
        "precision": len(right) / len(named) if named else None,
        "precision_10s": len(long_right) / len(long_named) if long_named else None,
        "time_recall": right_s / song_s if song_s else None,
        "time_precision": right_s / named_s if named_s else None,
        "boundary_error_s": med(errors),
        "start_error_s": med(starts),
        "end_error_s": med(ends),
        "boundary_error_p90_s": float(np.percentile(errors, 90)) if errors else None,
        "offset_error_s": med(offsets),
        "split": split,
        "named_in_unknown_s": in_unknown,
        "wrong": [p for p in named if p not in right],
        "missed": missed,
        "recall_by_kind": {k: {"found": v[0], "of": v[1]} for k, v in by_tag.items() if v[1]},
    }


# -- set-up ------------------------------------------------------------------------------------------


def setup(args, work: Path, data: Path) -> dict:
    """The catalogue, its index and threshold, audfprint's table and the recordings; returns their paths and
    the split of the songs."""
    import long_mix
    from run import rooms
    from setup_data import files

    from fplib import audio, calibrate, db, pretrained, search
    from fplib.data import IRBank, NoiseBank, item_rng
    from fplib.extraction import fingerprint_folders

    held = files("hedgewars-data", data) + files("colobot-common-sounds", data)
    order = item_rng(args.seed, "long split").permutation(len(held))
    n_in = len(held) // 2
    in_cat = sorted(held[i] for i in order[:n_in])
    out = [held[i] for i in order[n_in:]]
    distractors = files("supertux-data", data)
    rel = {str(p): str(p.relative_to(data)) for p in held + distractors}
    t = {}

    t0 = time.perf_counter()
    cat_dir, idx_dir = work / "catalogue", work / "index"
    res = fingerprint_folders(in_cat + distractors, cat_dir, pretrained.default_model(), progress=False)
    for path, reason in res.skipped:
        print(f"skipped {path}: {reason}")
    t["fingerprint_s"] = time.perf_counter() - t0
    index_path = idx_dir / "long.index"
    if not index_path.exists():
        index_path = db.build_index(cat_dir, "long", idx_dir).path
    # songs outside the catalogue that hold a catalogue song's audio (colobot's Infinite.ogg begins with
    # music008.ogg) are neither played as unknown music nor calibrated on
    shared = shared_audio(index_path, cat_dir, out, rel, work / "shared.json")
    for path, (song, score) in shared.items():
        print(f"left out: {path} holds the audio of catalogue song {song} (similarity {score:.2f})")
    out = [p for p in out if rel[str(p)] not in shared]
    unknown, negatives = sorted(out[: len(out) // 2]), sorted(out[len(out) // 2 :])
    split = {"catalogue": [rel[str(p)] for p in in_cat], "unknown": [rel[str(p)] for p in unknown]}
    split["negatives"] = [rel[str(p)] for p in negatives]
    split_path = work / "split.json"
    if not split_path.exists() or json.loads(split_path.read_text()) != split:  # made again, for this split
        search.threshold_path(index_path).unlink(missing_ok=True)
        for f in (work / "recordings").glob("*.truth.json"):
            f.unlink()
        split_path.write_text(json.dumps(split, indent=1))
    t1 = time.perf_counter()
    if not search.threshold_path(index_path).exists():
        room_dir = work / "rooms-calibration"
        rooms(room_dir, 20, args.seed + 7)
        noise_dir = data / "megaglest-data/usr/share/games/megaglest/tilesets"
        calibrate.calibrate_index(
            cat_dir,
            index_path,
            negatives=[str(p) for p in negatives],
            rooms=room_dir,
            noises=noise_dir,
            accept_miss=True,
            progress=False,
            say=None,
        )
    t["calibrate_s"] = time.perf_counter() - t1
    print(
        f"catalogue: {res.songs} songs ({res.seconds / 60:.0f} min: {len(in_cat)} held-out + {len(distractors)} "
        f"distractors); {len(unknown)} songs outside it play in the recordings, {len(negatives)} calibrate "
        f"the threshold ({t['fingerprint_s']:.0f} s to fingerprint, {t['calibrate_s']:.0f} s to calibrate)",
        flush=True,
    )

    table_path = work / "audfprint.pkl"
    if not table_path.exists():
        from audfprint2.core import analyzer, hash_table

        t2 = time.perf_counter()
        import random

        random.seed(args.seed)  # audfprint thins overfull buckets with the global `random`
        an = analyzer.Analyzer(density=AUDFPRINT["density"])
        table = hash_table.HashTable(hashbits=20, depth=100, maxtime=MAXTIME)
        for p in in_cat + distractors:
            h = audfprint_hashes(an, audio.load(p, audio.SR), audio.SR)
            table.store(rel[str(p)], [tuple(r) for r in h.tolist()])
        with open(table_path.with_suffix(".tmp"), "wb") as f:
            pickle.dump(table, f, pickle.HIGHEST_PROTOCOL)
        os.replace(table_path.with_suffix(".tmp"), table_path)
        t["audfprint_table_s"] = time.perf_counter() - t2
        print(f"audfprint: hash table of the same songs in {t['audfprint_table_s']:.0f} s", flush=True)

    speaker = long_mix.Speaker(work.parent / "tools")
    if not speaker.available:
        print(f"espeak-ng could not be had here ({speaker.problem}): speech is replaced by babble noise")
    rec_rooms = IRBank(rooms(work / "rooms-recordings", 10, args.seed + 11), audio.SR, max_s=1.0).irs
    noises = NoiseBank(files("megaglest-data", data), audio.SR).waves
    durations = {str(p.relative_to(data)): audio.info(p).duration for p in in_cat + unknown}
    known = {k: v for k, v in durations.items() if data / k in in_cat}
    unk = {k: v for k, v in durations.items() if data / k in unknown}
    recordings = []
    for minutes in args.minutes:
        path = work / "recordings" / f"long_{minutes:g}min_seed{args.seed}.wav"
        if not path.with_suffix(".truth.json").exists():
            t3 = time.perf_counter()
            excerpt = (40.0, 90.0) if args.quick else (60.0, 240.0)
            p = long_mix.plan(60.0 * minutes, known, unk, len(rec_rooms), len(noises), args.seed, excerpt)
            wav, truth, blocks = long_mix.assemble(p, data, rec_rooms, noises, speaker)
            audio.write(path, wav, audio.SR, subtype="PCM_16")
            path.with_suffix(".blocks.json").write_text(json.dumps(blocks, indent=1))
            path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=1))
            print(f"recording {path.name}: {len(wav) / audio.SR / 60:.1f} min made in {time.perf_counter() - t3:.0f} s")
        recordings.append(path)
    return {
        "catalogue": str(cat_dir),
        "index": str(index_path),
        "table": str(table_path),
        "recordings": [str(p) for p in recordings],
        "names": {s["id"]: s["path"] for s in catalogue_names(cat_dir, data)},
        "split": {**split, "distractors": len(distractors), "left_out": shared},
        "times": t,
        "speech": "espeak-ng" if speaker.available else f"babble noise ({speaker.problem})",
    }


SHARED_SCORE = 0.8  # an 8-s excerpt this similar to a catalogue song is that song's audio (others: < 0.5)


def shared_audio(index_path: Path, cat_dir: Path, songs: list[Path], rel: dict, cache: Path) -> dict:
    """``{song: (catalogue song, similarity)}`` for the ``songs`` that hold a catalogue song's audio: an 8-s
    excerpt (one every 8 s) whose best alignment scores at least :data:`SHARED_SCORE`. Cached in ``cache``."""
    from fplib import audio, search

    key = sorted(rel[str(p)] for p in songs)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved["songs"] == key:
            return {k: tuple(v) for k, v in saved["shared"].items()}
    rec = search.recognizer_from_files(None, cat_dir, index_path, no_threshold=True, phases=4, decision="margin")
    shared, n = {}, 8 * audio.SR
    by_id = {s.id: Path(s.path).name for s in rec.songs}
    for p in songs:
        wav = audio.load(p, audio.SR)
        best = (None, 0.0)
        for a in range(0, len(wav) - n + 1, n):
            r = rec.recognize(wav[a : a + n])
            if r.matches and r.matches[0].score > best[1]:
                best = (by_id[r.matches[0].song_id], float(r.matches[0].score))
        if best[1] >= SHARED_SCORE:
            shared[rel[str(p)]] = best
    cache.write_text(json.dumps({"songs": key, "shared": shared}))
    return shared


def catalogue_names(cat_dir: Path, data: Path) -> list[dict]:
    from fplib.catalogue import Catalogue

    with Catalogue(cat_dir) as cat:
        return [{"id": s.id, "path": str(Path(s.path).resolve().relative_to(data.resolve()))} for s in cat.songs()]


# -- the table -----------------------------------------------------------------------------------------


def _pct(x) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def _s(x, w=6) -> str:
    return " " * (w - 3) + "n/a" if x is None else f"{x:{w}.2f}"


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'recording':14s} {'system':9s} {'songs':>5s} {'recall':>6s} {'prec':>6s} {'prec10':>6s} {'t.rec':>6s} "
        f"{'t.prec':>6s} {'bound':>6s} {'start':>6s} {'end':>6s} {'offs':>6s} {'split':>5s} {'unk s':>6s} "
        f"{'x rt':>6s} {'load MB':>7s} {'peak MB':>7s}"
    )
    for r in rows:
        s = r["score"]
        print(
            f"{r['recording']:14s} {r['system']:9s} {s['truth_songs']:5d} {_pct(s['recall'])} {_pct(s['precision'])} "
            f"{_pct(s['precision_10s'])} {_pct(s['time_recall'])} {_pct(s['time_precision'])} "
            f"{_s(s['boundary_error_s'])} {_s(s['start_error_s'])} {_s(s['end_error_s'])} {_s(s['offset_error_s'])} "
            f"{s['split']:5d} {s['named_in_unknown_s']:6.0f} {r['x_real_time']:6.0f} {r['rss_loaded'] / 2**20:7.0f} "
            f"{r['peak_rss'] / 2**20:7.0f}"
        )
    print(
        "(songs: catalogue songs of >= 10 s in the truth; recall, prec: per segment (prec10: named segments of "
        ">= 10 s); t.rec, t.prec: seconds named right over seconds of songs, over seconds named; bound, start, "
        "end: median boundary error, s (0 inside a crossfade); offs: median error of the offset in the song, s; "
        "split: songs found in several pieces; unk s: seconds named inside unknown stretches; x rt: times real "
        "time, loading apart; load MB, peak MB: resident memory once loaded, and at the peak)"
    )
    kinds = sorted(
        {k for r in rows for k in r["score"]["recall_by_kind"]}, key=lambda k: TAGS.index(k) if k in TAGS else 99
    )
    print(
        f"\nrecall per kind of segment (found/of)\n{'recording':14s} {'system':9s} "
        + " ".join(f"{k:>13s}" for k in kinds)
    )
    for r in rows:
        by = r["score"]["recall_by_kind"]
        print(
            f"{r['recording']:14s} {r['system']:9s} "
            + " ".join(f"{(str(by[k]['found']) + '/' + str(by[k]['of'])) if k in by else '-':>13s}" for k in kinds)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one 10-minute recording of synthetic stand-ins (minutes)")
    ap.add_argument("--minutes", nargs="+", type=float, help="recording lengths (default: 10 60; --quick: 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--systems", nargs="+", default=["fplib", "audfprint"], choices=["fplib", "audfprint"])
    ap.add_argument("--name", default=None, help="results/long/<name>/ (default: full, or quick)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(Path(args.child[0]).read_text())
        Path(args.child[1]).write_text(json.dumps(child(job)))
        return
    from fplib import storage

    args.minutes = args.minutes or ([10.0] if args.quick else [10.0, 60.0])
    args.name = args.name or ("quick" if args.quick else "full")
    t_start = time.perf_counter()
    if args.quick:
        print(
            "QUICK MODE: one 10-minute recording of synthetic stand-in songs (90 s each) and noises; the figures "
            "say nothing about real music and are not comparable with a full run's",
            flush=True,
        )
        from standin import real_music_data

        data = real_music_data(storage.outputs_root() / "long_recordings" / "standin-data", 90.0, (2, 8, 8))
    else:
        from setup_data import DATA as data

        if not (data / "LICENSES.md").exists():
            sys.exit("no data: run benchmarks/real_music/setup_data.py first")
    work = storage.outputs_root() / "long_recordings" / args.name
    work.mkdir(parents=True, exist_ok=True)
    made = setup(args, work, data)
    out = RESULTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for rec_path in made["recordings"]:
        rec_path = Path(rec_path)
        truth = json.loads(rec_path.with_suffix(".truth.json").read_text())
        seconds = truth[-1]["end_s"]
        for system in args.systems:
            job = {
                "system": system,
                "recording": str(rec_path),
                **{k: made[k] for k in ("catalogue", "index", "table")},
            }
            got = run_child(job, work / f"{rec_path.stem}.{system}.json")
            pred = [  # fplib's songs by id (two files may have the same name), audfprint's by the path it stored
                {**s, "song": made["names"][s["song_id"]] if s.get("song_id") is not None else s["song"]}
                for s in got["segments"]
            ]
            row = {
                "recording": f"{seconds / 60:.0f} min",
                "file": str(rec_path),
                "seconds": seconds,
                "system": system,
                "x_real_time": seconds / got["run_s"],
                **{k: v for k, v in got.items() if k != "segments"},
                "score": score(truth, pred),
                "segments": pred,
            }
            rows.append(row)
            s = row["score"]
            print(
                f"{row['recording']} {system}: recall {_pct(s['recall'])}, precision {_pct(s['precision'])}, "
                f"boundary {_s(s['boundary_error_s'])} s, {row['x_real_time']:.0f}x real time, peak "
                f"{row['peak_rss'] / 2**20:.0f} MB",
                flush=True,
            )
    print_table(rows)
    for r in rows:
        if r["system"] == "fplib" and (r["score"]["missed"] or r["score"]["wrong"]):
            print(
                f"\n{r['recording']} fplib missed: "
                + "; ".join(f"{m['start_s']:.0f}-{m['end_s']:.0f} s {m['tags']}" for m in r["score"]["missed"])
            )
            print(
                f"{r['recording']} fplib wrong: "
                + "; ".join(f"{w['start_s']:.0f}-{w['end_s']:.0f} s {w['song']}" for w in r["score"]["wrong"])
            )
    storage.write_json(
        out / "results.json",
        {
            "quick": args.quick,
            "args": vars(args),
            "setup": {k: v for k, v in made.items() if k != "names"},
            "rows": rows,
            "seconds": time.perf_counter() - t_start,
        },
    )
    print(f"\n{out / 'results.json'} ({(time.perf_counter() - t_start) / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
