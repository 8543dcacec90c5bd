import dataclasses
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from fplib import audio
from fplib.augment import ir_onset
from fplib.synth.compose import NOTE_NAMES, SCALES
from fplib.synth.demo import CorpusSpec, item_seed, make_demo_corpus
from fplib.synth.music import PEAK_DBFS, synth_song
from fplib.synth.noise import NOISE_KINDS, synth_noise
from fplib.synth.rooms import simulate_rir

PEAK = 10 ** (PEAK_DBFS / 20)


def band_db(x: np.ndarray, sr: int, n_bands: int = 32, hop: int = 256) -> np.ndarray:
    """Log energies ``[n_bands, frames]`` in log-spaced bands from 80 Hz to Nyquist."""
    f, _, z = signal.stft(x, sr, nperseg=1024, noverlap=1024 - hop, boundary=None, padded=False)
    p = np.abs(z) ** 2
    edges = np.geomspace(80, sr / 2, n_bands + 1)
    bands = np.stack([p[(f >= lo) & (f < hi)].sum(0) for lo, hi in zip(edges[:-1], edges[1:])])
    return 10 * np.log10(bands + 1e-10)


def max_self_similarity(x: np.ndarray, sr: int, win_s: float = 1.0, min_sep_s: float = 1.0, hop: int = 256) -> float:
    """The highest correlation between the band-energy patterns of two ``win_s`` windows of ``x`` that
    start at least ``min_sep_s`` apart, over every alignment (16 ms steps): 1.0 for a periodic signal."""
    b = band_db(x, sr, hop=hop)
    b -= b.mean(axis=1, keepdims=True)  # the song's average spectrum says nothing about where we are
    win, sep = int(round(win_s * sr / hop)), int(round(min_sep_s * sr / hop))
    w = sliding_window_view(b, win, axis=1).transpose(1, 0, 2).reshape(-1, b.shape[0] * win)
    w = w - w.mean(axis=1, keepdims=True)
    w /= np.linalg.norm(w, axis=1, keepdims=True) + 1e-9
    c = w @ w.T
    i = np.arange(len(c))
    c[np.abs(i[:, None] - i[None, :]) < sep] = -1.0
    return float(c.max())


def centroid(x: np.ndarray, sr: int) -> float:
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return float((p * f).sum() / p.sum())


def schroeder_decay_s(h: np.ndarray, sr: int, db: float = 20.0) -> float:
    """Seconds the backward-integrated energy takes to fall from -5 dB to -(5 + db) dB."""
    e = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    e_db = 10 * np.log10(e / e[0] + 1e-30)
    return (np.argmax(e_db <= -5 - db) - np.argmax(e_db <= -5)) / sr


# ---------------------------------------------------------------------------------------------- songs


def test_song_is_deterministic_with_the_right_length_and_level():
    a, meta_a = synth_song(3, 4.0)
    b, meta_b = synth_song(3, 4.0)
    assert a.dtype == np.float32 and a.shape == (64000,)
    assert np.array_equal(a, b) and meta_a == meta_b
    assert np.isfinite(a).all()
    assert np.abs(a).max() == pytest.approx(PEAK, abs=1e-4)  # -1 dBFS: > 0.5, never clipping
    assert audio.rms_dbfs(a) > -30
    json.dumps(meta_a)  # plain JSON
    assert 70 <= meta_a["tempo_bpm"] <= 170 and meta_a["meter"] in (3, 4)
    assert meta_a["scale"] in SCALES and meta_a["key"] in NOTE_NAMES
    assert set(meta_a["instruments"]) == {"melody", "chords", "arp", "bass", "drums"}


@pytest.mark.parametrize("seconds,sr", [(2.5, 8000), (3.3, 16000), (1.0, 22050)])
def test_song_length_follows_seconds_and_rate(seconds, sr):
    x, meta = synth_song(7, seconds, sr)
    assert x.shape == (int(round(seconds * sr)),) and meta["sr"] == sr
    assert np.isfinite(x).all() and 0.5 < np.abs(x).max() <= 1.0


def test_songs_differ_across_seeds():
    songs = [synth_song(seed, 6.0) for seed in range(6)]
    tempos = {meta["tempo_bpm"] for _, meta in songs}
    assert len(tempos) == 6
    for i in range(6):
        for j in range(i + 1, 6):
            a, b = songs[i][0], songs[j][0]
            assert not np.allclose(a, b, atol=0.05)
            # even their long-term spectra differ (different keys, instruments, kits)
            sa, sb = band_db(a, 16000).mean(1), band_db(b, 16000).mean(1)
            assert np.sqrt(np.mean((sa - sb) ** 2)) > 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_second_of_a_song_repeats_another(seed):
    x, _ = synth_song(seed, 12.0)
    assert max_self_similarity(x, 16000) < 0.95
    # the measure does catch repetition: a song looped every 1.7 s is perfectly self-similar
    assert max_self_similarity(np.tile(x[: int(1.7 * 16000)], 7), 16000) > 0.99


def test_song_rejects_bad_arguments():
    with pytest.raises(ValueError):
        synth_song(0, 0.0)
    with pytest.raises(ValueError):
        synth_song(0, 1.0, sr=4000)


# --------------------------------------------------------------------------------------------- noises


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_kind(kind):
    x = synth_noise(kind, 0, 3.0)
    assert x.dtype == np.float32 and x.shape == (24000,)
    assert np.isfinite(x).all() and np.abs(x).max() <= 0.98 + 1e-6
    assert -26.0 < audio.rms_dbfs(x) < -19.9  # -20 dBFS RMS unless the peak limit pulled it down
    assert np.array_equal(x, synth_noise(kind, 0, 3.0))
    assert not np.allclose(x, synth_noise(kind, 1, 3.0))
    y = synth_noise(kind, 0, 1.5, sr=16000)
    assert y.shape == (24000,) and np.isfinite(y).all()


def test_noise_kinds_sound_different():
    sr = 8000
    xs = {k: synth_noise(k, 0, 10.0, sr) for k in NOISE_KINDS}
    assert len(NOISE_KINDS) >= 6
    c = {k: centroid(x, sr) for k, x in xs.items()}
    assert c["brown"] < c["pink"] < c["white"]
    assert c["white"] == pytest.approx(sr / 4, rel=0.05)
    assert c["traffic"] < 300 and c["rain"] > 2000 and c["hum"] < 700
    assert 250 < c["babble"] < 1200  # speech-like
    # long-term spectra (1/5-octave band levels) differ between every pair of kinds
    prof = {}
    for k, x in xs.items():
        p = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / sr)
        edges = np.geomspace(50, sr / 2, 31)
        bands = np.array([p[(f >= lo) & (f < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
        prof[k] = 10 * np.log10(bands / bands.sum() + 1e-12)
    for i, a in enumerate(NOISE_KINDS):
        for b in NOISE_KINDS[i + 1 :]:
            assert np.sqrt(np.mean((prof[a] - prof[b]) ** 2)) > 3.0, (a, b)


def test_hum_sits_on_mains_harmonics():
    x = synth_noise("hum", 4, 10.0)
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 8000)
    top = f[np.argsort(p)[-5:]]  # the five strongest frequencies (Hz)

    def off(mains: float) -> np.ndarray:  # distance (Hz) of each from the nearest harmonic
        return np.abs(top / mains - np.round(top / mains)) * mains

    assert min(off(50.0).max(), off(60.0).max()) < 2.0


def test_unknown_noise_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown noise kind"):
        synth_noise("thunder", 0, 1.0)


# ---------------------------------------------------------------------------------------------- rooms


@pytest.mark.parametrize("seed", range(4))
def test_rir_is_a_plausible_room(seed):
    h, meta = simulate_rir(seed)
    assert h.dtype == np.float32 and h.ndim == 1 and np.isfinite(h).all()
    assert np.abs(h).max() == pytest.approx(1.0)
    assert 0.05 < len(h) / 16000 <= 0.7 and meta["length_s"] == pytest.approx(len(h) / 16000, abs=1e-3)
    dims, src, mic = (np.array(meta[k]) for k in ("room_dim_m", "source_m", "mic_m"))
    assert np.all(dims >= [3, 3, 2.5]) and np.all(dims <= [15, 12, 5])
    assert 0.1 <= meta["absorption"] <= 0.7
    for p in (src, mic):
        assert np.all(p >= 0.5 - 1e-3) and np.all(p <= dims - 0.5 + 1e-3)
    # the onset (first tap within 6 dB of the peak; a coinciding pair of reflections can be louder than
    # the direct path) is the direct path: distance / c, plus pyroomacoustics' 40-sample filter delay
    direct = meta["distance_m"] / 343.0 * 16000 + 40
    assert abs(ir_onset(torch.from_numpy(h)[None]).item() - direct) <= 2
    assert meta["rt60_sabine_s"] > 0 and meta["max_order"] <= 60
    h2, meta2 = simulate_rir(seed)
    assert np.array_equal(h, h2) and meta == meta2


def test_rir_decay_follows_the_room():
    rooms = [simulate_rir(seed) for seed in range(8)]
    rt = [m["rt60_sabine_s"] for _, m in rooms]
    assert max(rt) > 2 * min(rt)  # the bank is varied
    live, dead = rooms[int(np.argmax(rt))][0], rooms[int(np.argmin(rt))][0]
    assert schroeder_decay_s(live, 16000) > 2 * schroeder_decay_s(dead, 16000)
    assert len({len(h) for h, _ in rooms}) == 8


# --------------------------------------------------------------------------------------------- corpus

TINY = CorpusSpec(n_songs=2, song_seconds=3.0, n_noises=3, noise_seconds=2.0, n_irs=2, seed=5)


def _mtimes(root):
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_make_demo_corpus_writes_loadable_files(tmp_path):
    dirs = make_demo_corpus(tmp_path, TINY, progress=False)
    assert dirs == {"music": tmp_path / "music", "noise": tmp_path / "noise", "rir": tmp_path / "rir"}
    assert sorted(p.name for p in audio.list_audio(dirs["music"])) == ["song_000.flac", "song_001.flac"]
    noises = sorted(p.name for p in audio.list_audio(dirs["noise"]))
    assert noises == ["brown_00.wav", "pink_00.wav", "white_00.wav"]
    assert sorted(p.name for p in audio.list_audio(dirs["rir"])) == ["room_000.wav", "room_001.wav"]

    song = dirs["music"] / "song_000.flac"
    i = sf.info(str(song))
    assert (i.format, i.samplerate, i.channels, i.frames) == ("FLAC", 16000, 1, 48000)
    x = audio.load(song)  # resampled to 8 kHz
    assert x.shape == (24000,) and 0.5 < np.abs(x).max() <= 1.0
    i = sf.info(str(dirs["noise"] / "pink_00.wav"))
    assert (i.format, i.subtype, i.samplerate) == ("WAV", "PCM_16", 8000)
    assert audio.load(dirs["noise"] / "pink_00.wav").shape == (16000,)
    assert sf.info(str(dirs["rir"] / "room_000.wav")).samplerate == 16000
    assert np.abs(audio.load(dirs["rir"] / "room_000.wav", sr=16000)).max() == pytest.approx(1.0, abs=1e-6)

    manifest = json.loads((tmp_path / "corpus.json").read_text())
    assert manifest["spec"] == dataclasses.asdict(TINY)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*") if p.name != "corpus.json"}
    assert listed == on_disk and len(listed) == 7
    songs = [f for f in manifest["files"] if f["type"] == "music"]
    assert songs[0]["seed"] != songs[1]["seed"] and songs[0]["tempo_bpm"] != songs[1]["tempo_bpm"]
    assert [f["kind"] for f in manifest["files"] if f["type"] == "noise"] == ["white", "pink", "brown"]
    assert all("rt60_sabine_s" in f for f in manifest["files"] if f["type"] == "rir")
    # the file holds exactly what synth_song makes from the item's seed
    wav, _ = synth_song(item_seed(TINY.seed, "music", 0), TINY.song_seconds)
    assert np.abs(sf.read(str(song), dtype="float32")[0] - wav).max() < 1e-4


def test_make_demo_corpus_is_idempotent_and_regenerates_on_a_new_spec(tmp_path):
    make_demo_corpus(tmp_path, TINY, progress=False)
    before = _mtimes(tmp_path)
    first = audio.load(tmp_path / "music" / "song_000.flac")
    make_demo_corpus(tmp_path, TINY, progress=False)
    assert _mtimes(tmp_path) == before  # nothing rewritten

    new = dataclasses.replace(TINY, seed=6, n_songs=1, n_noises=1)
    make_demo_corpus(tmp_path, new, progress=False)
    manifest = json.loads((tmp_path / "corpus.json").read_text())
    assert manifest["spec"] == dataclasses.asdict(new)
    assert not (tmp_path / "music" / "song_001.flac").exists()  # stale files of the old spec are gone
    assert not (tmp_path / "noise" / "pink_00.wav").exists()
    assert not np.allclose(audio.load(tmp_path / "music" / "song_000.flac"), first, atol=0.05)
    after = _mtimes(tmp_path)
    assert all(after[k] != before[k] for k in after)


def test_an_interrupted_corpus_is_redone_identically(tmp_path):
    make_demo_corpus(tmp_path, TINY, progress=False)
    first = {p.name: sf.read(str(p))[0] for p in (tmp_path / "music").iterdir()}
    (tmp_path / "corpus.json").unlink()  # as if killed before the manifest was written
    (tmp_path / "rir" / "room_001.wav").unlink()
    (tmp_path / "music" / ".song_001.abc123.tmp.flac").write_bytes(b"half")  # a dead temporary file
    make_demo_corpus(tmp_path, TINY, progress=False)
    assert (tmp_path / "corpus.json").exists() and (tmp_path / "rir" / "room_001.wav").exists()
    assert not (tmp_path / "music" / ".song_001.abc123.tmp.flac").exists()
    for name, wav in first.items():
        assert np.array_equal(sf.read(str(tmp_path / "music" / name))[0], wav)


def test_user_files_are_left_alone(tmp_path):
    (tmp_path / "music").mkdir()
    mine = tmp_path / "music" / "my_song.flac"
    mine.write_bytes(b"not touched")
    make_demo_corpus(tmp_path, TINY, progress=False)
    make_demo_corpus(tmp_path, dataclasses.replace(TINY, n_songs=1), progress=False)
    assert mine.read_bytes() == b"not touched"


def test_item_seeds_are_stable_and_distinct():
    seeds = {item_seed(0, kind, i) for kind in ("music", "noise", "rir") for i in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**53 for s in seeds)
    assert item_seed(0, "music", 3) == item_seed(0, "music", 3) != item_seed(1, "music", 3)


def test_corpus_spec_is_checked():
    with pytest.raises(ValueError):
        CorpusSpec(n_songs=-1)
    with pytest.raises(ValueError):
        CorpusSpec(song_seconds=0)
    assert math.isclose(CorpusSpec().song_seconds, 30.0)
