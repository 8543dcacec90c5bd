"""segments: every song of a long recording with its start and end. The shipped (trained) model, a real
catalogue of 5 songs, a faiss index and a threshold calibrated (margin decision, 4 phases) on an
out-of-catalogue song and on noise; the recording is assembled from catalogue songs, another
out-of-catalogue song, cuts, a crossfade, a song played twice, one played 3 % fast, a pause, talk over
music, a simulated room and noise. Tolerances are wide (a second or so): the results must hold on any
CPU, so no boundary is checked to the tenth of a second."""

import json
import tracemalloc

import numpy as np
import pytest
import soxr
import torch

from fplib import audio, index, pretrained, segments
from fplib.augment import add_noise, convolve_ir
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model, model_description
from fplib.extraction import extract
from fplib.features import n_windows
from fplib.search import Recognizer, calibrate
from fplib.synth.noise import synth_noise
from fplib.synth.rooms import simulate_rir
from tests.helpers import music_like, write

SR = 8000
SONG_S = 40.0
CATALOGUE = [f"song_{i}" for i in range(5)]


def _song(i: int) -> np.ndarray:
    return music_like(SONG_S, SR, seed=100 + i)


def _degrade(wav: np.ndarray, seed: int, snr_db: float, noise: str = "pink") -> np.ndarray:
    """Through a simulated room, then background noise at ``snr_db``."""
    x = torch.from_numpy(wav)[None]
    ir = torch.from_numpy(simulate_rir(seed, sr=SR)[0])[None]
    x = convolve_ir(x, ir)
    n = torch.from_numpy(synth_noise(noise, seed, len(wav) / SR, SR)[: len(wav)])[None]
    return add_noise(x, n, torch.tensor([snr_db])).numpy()[0].astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    ckpt = pretrained.default_model()
    model, fe = load_model(ckpt)
    for i, name in enumerate(CATALOGUE):
        write(root / "db" / f"{name}.flac", _song(i), SR)
    cat = Catalogue(root / "cat", fe, model_description(ckpt, model))
    extract(audio.list_audio(root / "db"), cat, model, progress=False, root=root / "db")
    path = index.build(cat, "songs", root / "idx")
    rec = Recognizer(model, cat, path, phases=4, decision="margin")
    scores: dict[int, list[float]] = {}  # out of the catalogue: songs 90 and 93 through rooms and noise; noises
    for seed in (90, 93):
        wav = _degrade(music_like(SONG_S, SR, seed=seed), seed=seed, snr_db=15.0)
        for length in (3.0, 6.0, 10.0):
            for start in np.arange(0.0, SONG_S - length, 4.3):
                q = wav[int(start * SR) :][: int(length * SR)]
                scores.setdefault(n_windows(len(q), fe), []).append(rec.recognize(q).confidence)
    for length in (3.0, 6.0, 10.0):
        for k, kind in enumerate(("pink", "babble", "cafe")):
            q = synth_noise(kind, 50 + k, length, SR)
            scores.setdefault(n_windows(len(q), fe), []).append(rec.recognize(q).confidence)
    rec.threshold = calibrate(scores, 0.0)
    yield {"root": root, "rec": rec, "fe": fe}
    cat.close()


def _clip(song: np.ndarray, offset_s: float, seconds: float, fade_s: float, speed: float = 1.0) -> np.ndarray:
    """``seconds`` of a song from ``offset_s`` (played at ``speed``), with ``fade_s / 2`` more on each side,
    faded in and out over ``fade_s``: placed ``fade_s / 2`` before its start, it crosses the neighbouring
    clips at 50 % on the boundaries."""
    lo = int(round((offset_s - fade_s / 2 * speed) * SR))
    n = int(round((seconds + fade_s) * SR))
    x = song[lo : lo + int(np.ceil(n * speed)) + 2]
    if speed != 1.0:
        x = soxr.resample(x, SR * speed, SR)  # more samples per second of song at a higher speed
    x = x[:n].copy()
    f = int(round(fade_s * SR))
    if f:
        ramp = np.linspace(0.0, 1.0, f, dtype=np.float32)
        x[:f] *= ramp
        x[-f:] *= ramp[::-1]
    return x


# (what, start_s, end_s, offset_s in the song at the start, speed, fade_s); None: out of the catalogue
PLAN = [
    ("song_0", 0.0, 20.0, 5.0, 1.0, 0.5),
    (None, 20.0, 30.0, 3.0, 1.0, 0.5),
    ("song_1", 30.0, 50.0, 10.0, 1.0, 2.0),  # crossfades (2 s) into song_0 again
    ("song_0", 50.0, 70.0, 1.0, 1.0, 2.0),  # played twice
    ("song_2", 70.0, 90.0, 8.0, 1.03, 0.5),  # 3 % fast
    ("song_3", 90.0, 101.0, 2.0, 1.0, 0.1),  # then a 2-s pause: it resumes where it stopped
    ("song_3", 103.0, 114.0, 13.0, 1.0, 0.1),
]
TRUTH = [  # (song, start_s, end_s, offset_s): segments of 10 s or more
    ("song_0", 0.0, 20.0, 5.0),
    ("song_1", 30.0, 50.0, 10.0),
    ("song_0", 50.0, 70.0, 1.0),
    ("song_2", 70.0, 90.0, 8.0),
    ("song_3", 90.0, 114.0, 2.0),
]
TALK = (36.0, 42.0)  # babble over song_1, as loud as the music


def _recording() -> np.ndarray:
    total = PLAN[-1][2]
    out = np.zeros(int(total * SR) + SR, np.float32)
    for what, start, end, offset, speed, fade in PLAN:
        song = _song(CATALOGUE.index(what)) if what else music_like(SONG_S, SR, seed=91)
        x = _clip(song, offset, end - start, fade, speed)
        lo = int(round((start - fade / 2) * SR))
        if lo < 0:
            x, lo = x[-lo:], 0
        out[lo : lo + len(x)] += x
    out = out[: int(total * SR)]
    a, b = (int(t * SR) for t in TALK)
    talk = synth_noise("babble", 3, (b - a) / SR, SR)
    out[a:b] += talk * np.sqrt(np.mean(out[a:b] ** 2) / np.mean(talk**2))
    return _degrade(out, seed=11, snr_db=15.0, noise="cafe")


@pytest.fixture(scope="module")
def found(world):
    """The recording's segments, fed in chunks of 3000 samples, and what the segmenter held after each."""
    wav = _recording()
    seg = segments.Segmenter(world["rec"])
    out, held = [], []
    for k in range(0, len(wav), 3000):
        out += seg.feed(wav[k : k + 3000])
        held.append(seg.nbytes())
    return {"wav": wav, "segments": out + seg.finish(), "held": held}


def test_every_song_found_with_its_start_end_and_offset(found):
    got = found["segments"]
    songs = [s for s in got if s.song is not None]
    report = "\n".join(map(str, got))
    assert [s.song for s in songs] == [t[0] for t in TRUTH], report  # one segment each, none announced twice
    for s, (name, start, end, offset) in zip(songs, TRUTH):
        assert s.start_s == pytest.approx(start, abs=1.5), report
        assert s.end_s == pytest.approx(end, abs=1.5), report
        assert s.offset_s == pytest.approx(offset + (s.start_s - start) * (1.03 if name == "song_2" else 1.0), abs=1.5)
        assert s.confidence >= s.threshold
    errors = [abs(s.start_s - t[1]) for s, t in zip(songs, TRUTH)] + [abs(s.end_s - t[2]) for s, t in zip(songs, TRUTH)]
    assert np.median(errors) < 1.0, report


def test_the_unknown_stretch_is_reported_as_unknown(found):
    got = found["segments"]
    assert got[0].start_s == 0.0 and got[-1].end_s == pytest.approx(len(found["wav"]) / SR, abs=1e-3)
    for a, b in zip(got, got[1:]):  # one timeline: no gap, no overlap
        assert b.start_s == pytest.approx(a.end_s, abs=1e-6) and b.end_s > b.start_s
    for s in got:
        overlap = min(s.end_s, 30.0) - max(s.start_s, 20.0)
        assert s.song is None or overlap < 1.5, "\n".join(map(str, got))
    unknown = [s for s in got if s.song is None and s.start_s < 25.0 < s.end_s]
    assert unknown and unknown[0].duration_s > 7.0
    assert unknown[0].to_json() == {
        "song": None,
        "song_id": None,
        "start_s": round(unknown[0].start_s, 3),
        "end_s": round(unknown[0].end_s, 3),
        "offset_s": None,
        "confidence": None,
        "threshold": None,
    }
    j = found["segments"][0].to_json()
    assert j["song"] == "song_0" and {"start_s", "end_s", "offset_s", "confidence"} <= set(j)
    json.dumps([s.to_json() for s in got])  # all JSON


def test_out_of_catalogue_music_and_noise_are_one_unknown_stretch(world):
    wav = np.concatenate(
        [_degrade(music_like(SONG_S, SR, seed=92), 3, 15.0), synth_noise("traffic", 2, 10.0, SR), np.zeros(SR * 3)]
    )
    got = list(segments.Segmenter(world["rec"]).segments([wav]))
    assert [(s.song, s.start_s) for s in got] == [(None, 0.0)] and got[0].end_s == pytest.approx(len(wav) / SR)


def test_state_stays_within_its_bound(found):
    """What the segmenter holds after the recording's 114 s is no more than after its first 30 s: the
    buffer, the candidates and the open segment are bounded by window_s, not by the stream's length."""
    held = found["held"]
    early, late = max(held[: len(held) // 4]), max(held)
    assert late <= 1.3 * early and late < 2_000_000, (early, late)


def test_segment_file_streams_a_file_with_a_progress_bar(world, found, tmp_path, capsys):
    """The recording's first 50 s (song_0, the unknown stretch, song_1) as an Ogg Vorbis file."""
    path = tmp_path / "recording.ogg"
    audio.write(path, found["wav"][: 50 * SR], SR)
    got = list(segments.segment_file(world["rec"], path, progress=True))
    assert [s.song for s in got] == ["song_0", None, "song_1"], "\n".join(map(str, got))
    for a, b in zip(got, found["segments"]):
        assert a.start_s == pytest.approx(b.start_s, abs=0.75) and a.song == b.song
    assert got[-1].end_s == pytest.approx(50.0, abs=0.1) and got[0].end_s == pytest.approx(
        found["segments"][0].end_s, abs=0.75
    )
    assert "s audio" in capsys.readouterr().err
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio" * 100)
    with pytest.raises(audio.AudioError, match="bad.mp3"):
        next(segments.segment_file(world["rec"], bad))


@pytest.mark.slow
def test_memory_is_the_same_for_2_and_10_minutes(world, found):
    """Peak Python/numpy memory (tracemalloc) streaming 2 and 10 minutes of audio: within 20 %."""
    wav = found["wav"]

    def stream(seconds: float):
        n = int(seconds * SR)
        for k in range(0, n, 4000):
            j = k % len(wav)
            yield wav[j : j + min(4000, n - k)]

    list(segments.Segmenter(world["rec"]).segments(stream(20)))  # first calls allocate their caches
    peaks = []
    for minutes in (2, 10):
        seg = segments.Segmenter(world["rec"])
        tracemalloc.start()
        n = sum(1 for s in seg.segments(stream(60 * minutes)) if s.song)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n >= 5 * (60 * minutes // 114)  # 5 songs every 114 s
    assert max(peaks) <= 1.2 * min(peaks), peaks


@pytest.fixture(scope="module")
def on_disk(world, found, tmp_path_factory):
    """The catalogue, index and threshold as the commands read them, and the recording as a FLAC file."""
    from fplib.search import save_threshold

    rec, root = world["rec"], world["root"]
    index_path = root / "idx" / "songs.index"
    save_threshold(index_path, {"threshold": rec.threshold.to_dict(), "phases": 4, "decision": "margin"})
    path = tmp_path_factory.mktemp("rec") / "recording.flac"
    audio.write(path, found["wav"], SR)
    return {"catalogue": str(root / "cat"), "index": str(index_path), "recording": str(path)}


def test_recognize_segments_prints_every_song_of_a_recording(on_disk, found, capsys):
    from fplib import cli

    where = ["--catalogue", on_disk["catalogue"], "--index", on_disk["index"], "--no_progress"]
    assert cli.main(["recognize", on_disk["recording"], "--segments", "--json", *where]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["song"] for r in rows] == [s.song for s in found["segments"]], out
    assert all(r["file"] == on_disk["recording"] for r in rows)
    assert {"song", "start_s", "end_s", "offset_s", "confidence"} <= set(rows[0])
    assert "song segment(s)" in err
    assert cli.main(["recognize", on_disk["recording"], "--segments", *where]) == 0  # text: one line per segment
    lines = capsys.readouterr().out.splitlines()
    assert any("unknown" in line for line in lines) and any("song_3 from" in line for line in lines), lines


def test_recognize_answers_a_long_recording_for_its_first_minutes_and_points_to_segments(on_disk, monkeypatch, capsys):
    """A recording longer than search.MAX_QUERY_S (here lowered to 15 s; 180 s by default) is answered for its
    first MAX_QUERY_S seconds, read alone, and the answer says that --segments lists every song."""
    from fplib import cli, search

    monkeypatch.setattr(search, "MAX_QUERY_S", 15.0)
    where = ["--catalogue", on_disk["catalogue"], "--index", on_disk["index"]]
    assert cli.main(["recognize", on_disk["recording"], "--json", *where]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["song"] == "song_0" and row["query_end_s"] == pytest.approx(15.0)
    assert row["recording_s"] == pytest.approx(len(audio.load(on_disk["recording"], SR)) / SR, abs=0.01)
    assert cli.main(["recognize", on_disk["recording"], *where]) == 0
    assert "answered for its first 15 s; `recognize --segments` lists every song" in capsys.readouterr().out


def test_listen_prints_segments_as_they_close(on_disk, found, capsys):
    from fplib import cli

    argv = ["listen", on_disk["recording"], "--no_realtime", "--segments", "--json"]
    assert cli.main([*argv, "--catalogue", on_disk["catalogue"], "--index", on_disk["index"]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    songs = [r["song"] for r in rows if r["song"] is not None]
    assert songs == [s.song for s in found["segments"] if s.song is not None], rows


def test_mixtape_truth_says_what_plays_where(tmp_path):
    """fplib.queries.mixtape, notebook 05's long recording: each song's stretch where the truth puts it, at the
    truth's offset in the song, songs outside the catalogue merged into one unknown stretch."""
    from fplib import queries

    files = []
    for i in range(4):
        files.append(str(tmp_path / f"s{i}.flac"))
        write(tmp_path / f"s{i}.flac", _song(i), SR)
    mix, truth = queries.mixtape(
        [(files[0], "a"), (files[1], None), (files[2], None), (files[3], "d")], seconds=12.0, crossfade_s=2.0, seed=3
    )
    assert len(mix) == (4 * 10 + 2) * SR
    assert [(t.song, t.start_s, t.end_s) for t in truth] == [("a", 0.0, 11.0), (None, 11.0, 31.0), ("d", 31.0, 42.0)]
    for t, i in ((truth[0], 0), (truth[2], 3)):
        song = audio.load(files[i], SR)
        a = mix[int((t.start_s + 2) * SR) :][: 2 * SR]
        b = song[int(round((t.offset_s + 2) * SR)) :][: 2 * SR]
        assert np.corrcoef(a, b)[0, 1] > 0.99  # past the crossfade: the song itself, at the truth's offset
