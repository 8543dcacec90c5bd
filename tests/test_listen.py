"""listen: live recognition of a stream, without a sound device. A real (tiny, freshly initialised)
model saved as a checkpoint, a real catalogue, faiss index and calibrated threshold file; streams are
real audio (database songs through a room and noise, out-of-database songs, noise), fed through the
same code as standard input (a subprocess reading a pipe, or the listener in-process)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch

from fplib import audio, index, listen, streams
from fplib.catalogue import Catalogue
from fplib.checkpoints import model_description, save_checkpoint
from fplib.data import IRBank, NoiseBank
from fplib.extraction import extract
from fplib.features import FrontEnd, n_windows
from fplib.models.registry import build_model
from fplib.queries import Query, render
from fplib.search import Recognizer, calibrate, recognizer_from_files, save_threshold
from tests.helpers import music_like, write

FE = FrontEnd()
ROOT = Path(__file__).resolve().parents[1]
SONG_S = 20.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """6 songs in the database, 2 out of it, noises and rooms; a checkpoint, catalogue, index and a
    threshold calibrated (margin decision, 4 phases) on out-of-database song 6 and on noise."""
    root = tmp_path_factory.mktemp("listen")
    torch.manual_seed(0)
    model, settings = build_model("nafp_small", FE, width=0.125)
    model.eval()
    ckpt = root / "model.pt"
    save_checkpoint(
        ckpt,
        {"model": model.state_dict(), "model_name": "nafp_small", "model_settings": settings, "frontend": FE.to_dict()},
    )
    for i in range(8):
        write(root / ("db" if i < 6 else "out") / f"song_{i}.flac", music_like(SONG_S, 16000, seed=10 + i), 16000)
    rng = np.random.default_rng(0)
    for i in range(2):
        write(root / "noise" / f"noise_{i}.wav", (0.1 * rng.standard_normal(8000 * 6)).astype(np.float32), 8000)
        ir = 0.3 * np.exp(-np.arange(2000) / (150.0 * (i + 1))) * rng.standard_normal(2000)
        ir[:20], ir[20] = 0, 1.0
        write(root / "rir" / f"room_{i}.wav", (ir / np.abs(ir).max()).astype(np.float32), 8000, subtype="FLOAT")
    cat = Catalogue(root / "cat", FE, model_description(ckpt))
    extract(audio.list_audio(root / "db"), cat, model, progress=False, root=root / "db")
    path = index.build(cat, "songs", root / "idx")
    irs, noises = IRBank(audio.list_audio(root / "rir")), NoiseBank(audio.list_audio(root / "noise"))
    rec = Recognizer(model, cat, path, phases=4, decision="margin")
    scores: dict[int, list[float]] = {}
    k = 0
    for length in (1.0, 2.0, 3.0, 5.0, 10.0):
        for start in np.arange(0.0, SONG_S - length, 2.3):
            q = Query(k, False, str(root / "out" / "song_6.flac"), "", float(start), length, 15.0, k % 2, k)
            k += 1
            scores.setdefault(n_windows(int(length * FE.sr), FE), []).append(
                rec.recognize(render(q, irs, noises)).confidence
            )
        for j in range(4):
            wav = noises.sample(np.random.default_rng(j), int(length * FE.sr)).copy()
            scores.setdefault(n_windows(len(wav), FE), []).append(rec.recognize(wav).confidence)
    threshold = calibrate(scores, 0.0)
    save_threshold(path, {"threshold": threshold.to_dict(), "phases": 4, "decision": "margin", "fpr": 0.0})
    cat.close()
    return {"root": root, "model": ckpt, "catalogue": root / "cat", "index": path, "irs": irs, "noises": noises}


def _recognizer(setup) -> Recognizer:
    return recognizer_from_files(setup["model"], setup["catalogue"], setup["index"])


def _degraded(setup, song: str, start: float, length: float, snr: float = 20.0, seed: int = 1) -> np.ndarray:
    folder = "db" if int(song.split("_")[1]) < 6 else "out"
    q = Query(0, folder == "db", str(setup["root"] / folder / f"{song}.flac"), song, start, length, snr, seed % 2, seed)
    return render(q, setup["irs"], setup["noises"])


def _cli(setup, args: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "fplib.cli",
        "listen",
        *args,
        "--model",
        str(setup["model"]),
        "--catalogue",
        str(setup["catalogue"]),
        "--index",
        str(setup["index"]),
        "--no-realtime",
        "--json",
    ]
    return subprocess.run(cmd, input=stdin, capture_output=True, cwd=ROOT, timeout=300)


def _events(r: subprocess.CompletedProcess) -> list[dict]:
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


@pytest.mark.slow
def test_raw_pcm_on_stdin_names_song_and_offset(setup):
    """A database song through a room and noise, from 6.3 s in, as 16-kHz stereo s16le on a pipe."""
    start = 6.3
    wav = _degraded(setup, "song_2", start, 12.0)
    up = soxr.resample(wav, 8000, 16000)
    stereo = np.stack([up, 0.5 * up], axis=1)
    pcm = (np.clip(stereo, -1, 1) * 32767).astype("<i2").tobytes()
    events = _events(_cli(setup, ["-", "--format", "s16le", "--rate", "16000", "--channels", "2"], pcm))
    assert events, "nothing was recognised"
    first = events[0]
    assert first["event"] == "match" and first["name"] == "song_2"
    assert first["offset_s"] == pytest.approx(start + first["time_s"], abs=0.5)  # where the song is now
    assert first["heard_s"] <= first["time_s"] <= 12.0 and first["confidence"] >= first["threshold"]
    assert all(e["name"] == "song_2" for e in events)


def test_compressed_stream_on_stdin_is_decoded(setup, tmp_path):
    """An ogg file piped in (no --format): decoded as it arrives; same answer."""
    start = 3.1
    path = tmp_path / "q.ogg"
    audio.write(path, _degraded(setup, "song_4", start, 10.0, seed=3), 8000)
    events = _events(_cli(setup, ["-"], path.read_bytes()))
    assert events and events[0]["event"] == "match" and events[0]["name"] == "song_4"
    assert events[0]["offset_s"] == pytest.approx(start + events[0]["time_s"], abs=0.5)


def test_garbage_on_stdin_is_a_clear_error(setup):
    r = _cli(setup, ["-"], b"this is not audio at all" * 100)
    assert r.returncode == 2 and b"error:" in r.stderr and b"--format" in r.stderr


def test_a_file_source_on_a_device_and_the_source_errors(setup, tmp_path, capsys):
    """A file (not standard input) with --device; raw PCM without --rate and a missing file are errors
    that name the problem (exit 2), the first before any model is loaded."""
    from fplib import cli

    start = 5.2
    path = tmp_path / "q.flac"
    audio.write(path, _degraded(setup, "song_1", start, 10.0, seed=2), 8000)
    common = [
        "--model",
        str(setup["model"]),
        "--catalogue",
        str(setup["catalogue"]),
        "--index",
        str(setup["index"]),
        "--no_realtime",
        "--json",
        "--device",
        "cpu",
    ]
    assert cli.listen_main([str(path), *common]) == 0
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert events and events[0]["name"] == "song_1" and "threshold:" in err
    assert events[0]["offset_s"] == pytest.approx(start + events[0]["time_s"], abs=0.5)
    assert cli.listen_main(["-", "--format", "s16le", "--catalogue", "nowhere", "--index", "x.index"]) == 2
    assert capsys.readouterr().err.strip() == "error: --format needs --rate (raw PCM has no header to read it from)"
    assert cli.listen_main([str(tmp_path / "missing.wav"), *common]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error:") and "missing.wav" in err
    with pytest.raises(ValueError, match="--format needs --rate"):
        streams.Source("-", "f32le")
    assert streams.Source("mic", input_device="3").input_device == 3


def _run(listener, wav, chunk=1237):
    events = []
    for k in range(0, len(wav), chunk):
        events += listener.feed(wav[k : k + chunk])
    return events


def test_out_of_database_music_and_noise_say_nothing(setup):
    listener = listen.Listener(_recognizer(setup))
    stream = np.concatenate(
        [
            _degraded(setup, "song_7", 0.0, SONG_S, seed=5),
            setup["noises"].sample(np.random.default_rng(9), 8 * FE.sr),
            np.zeros(3 * FE.sr, np.float32),
        ]
    )
    assert _run(listener, stream) == []
    assert listener.time_s == pytest.approx(len(stream) / FE.sr, abs=0.5)


def test_song_a_then_song_b(setup):
    a, b = _degraded(setup, "song_1", 4.0, 12.0, seed=2), _degraded(setup, "song_5", 2.0, 12.0, seed=4)
    listener = listen.Listener(_recognizer(setup))
    events = [e for e in _run(listener, np.concatenate([a, b])) if e.kind == "match"]
    assert [e.name for e in events] == ["song_1", "song_5"], [str(e) for e in events]
    ea, eb = events
    assert ea.time_s < 12.0 and ea.offset_s == pytest.approx(4.0 + ea.time_s, abs=0.5)
    assert 12.0 < eb.time_s < 24.0 and eb.offset_s == pytest.approx(2.0 + eb.time_s - 12.0, abs=0.5)


def _same_matches(ours, theirs):
    assert [(m.name, m.offset_s) for m in ours] == [(m.name, m.offset_s) for m in theirs]
    np.testing.assert_allclose([m.score for m in ours], [m.score for m in theirs], atol=1e-5)


@pytest.mark.slow
def test_incremental_matching_equals_recognizer_on_the_same_audio(setup):
    """After every hop, the rolling buffer (and its last 3 s) rank songs exactly as Recognizer.recognize
    ranks that audio: same songs, offsets and scores."""
    reference = _recognizer(setup)
    listener = listen.Listener(_recognizer(setup), window_s=5.0, change_s=None)
    wav = np.concatenate([_degraded(setup, "song_3", 2.7, 7.0, seed=6), _degraded(setup, "song_0", 0.0, 3.0)])
    checked = 0
    for k in range(0, len(wav), 2900):
        listener.feed(wav[k : k + 2900])
        buf = listener.buffer()
        if n_windows(len(buf), FE) == 0:
            continue
        assert len(buf) <= 5 * FE.sr
        _same_matches(listener.matches(), reference.recognize(buf, top=1000).matches)
        if len(buf) > 3 * FE.sr:
            _same_matches(listener.matches(3.0), reference.recognize(buf[-3 * FE.sr :], top=1000).matches)
        checked += 1
    assert checked > 15 and listener.time_s > 9.5  # the buffer rolled: old windows and candidates were dropped
    assert sum(len(ph.keys) for ph in listener.phase) <= 4 * 9 * reference.k


def test_pcm_chunks_reassemble_frames_across_reads(tmp_path):
    """Reads that split frames, two channels averaged, s16 and f32 scaling."""
    x = np.random.default_rng(0).uniform(-1, 1, (3001, 2)).astype(np.float32)
    path = tmp_path / "x.f32"
    path.write_bytes(x.astype("<f4").tobytes())
    with open(path, "rb") as f:
        got = np.concatenate(list(streams.pcm_chunks(f, "f32le", 8000, 2, block_s=0.0173)))
    np.testing.assert_allclose(got, x.mean(axis=1), atol=1e-7)
    path.write_bytes((x[:, 0] * 32768).astype("<i2").tobytes())
    with open(path, "rb") as f:
        got = np.concatenate(list(streams.pcm_chunks(f, "s16le", 8000, 1)))
    np.testing.assert_allclose(got, x[:, 0], atol=1 / 32768)
    with pytest.raises(streams.ListenError, match="unknown PCM format"):
        next(streams.pcm_chunks(open(path, "rb"), "u8", 8000, 1))


def test_microphone_without_portaudio_is_a_clear_error_and_breaks_nothing(setup):
    code = (
        "import sys, fplib.cli, fplib.listen; assert 'sounddevice' not in sys.modules; "
        "sys.exit(fplib.cli.main(sys.argv[1:]))"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        "listen",
        "--model",
        str(setup["model"]),
        "--catalogue",
        str(setup["catalogue"]),
        "--index",
        str(setup["index"]),
    ]
    try:
        import sounddevice  # noqa: F401

        pytest.skip("PortAudio is installed here: the microphone would really be opened")
    except (ImportError, OSError):  # no package, or no PortAudio library
        pass
    r = subprocess.run(cmd, capture_output=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and b"listen -" in r.stderr, r.stderr.decode()
    assert b"PortAudio" in r.stderr or b"pip install sounddevice" in r.stderr
