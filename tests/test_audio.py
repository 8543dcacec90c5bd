import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from fplib import audio
from tests.helpers import tone, write

FORMATS = [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("opus", "OPUS"), ("mp3", "MPEG_LAYER_III")]


@pytest.mark.parametrize("ext,subtype", FORMATS)
def test_reads_every_format_to_8k_mono_float32(tmp_path, ext, subtype):
    sr = 48000 if ext == "opus" else 16000  # opus only supports 8/12/16/24/48 kHz
    x = tone(3.0, sr, freq=440.0)
    path = write(tmp_path / f"a.{ext}", x, sr, subtype=subtype, format="OGG" if ext == "opus" else None)
    y = audio.load(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 3 * audio.SR) <= 0.05 * audio.SR  # lossy codecs may pad a little
    # the tone survives the codec: its spectral peak is at 440 Hz
    spec = np.abs(np.fft.rfft(y[4000:12000]))
    assert abs(np.argmax(spec) * audio.SR / 8000 - 440) < 10


def test_a_whole_opus_file_is_decoded_by_ffmpeg_and_agrees_with_libsndfile(tmp_path, monkeypatch):
    from tests.helpers import music_like

    x = music_like(6.0, 48000)
    path = write(tmp_path / "a.opus", np.stack([x, 0.5 * x], axis=1), 48000, subtype="OPUS", format="OGG")
    calls = []
    real = audio._av_decode
    monkeypatch.setattr(audio, "_av_decode", lambda *a: calls.append(a) or real(*a))
    whole = audio.load(path)
    assert len(calls) == 1  # the whole file: FFmpeg
    seg = audio.load(path, offset=2.0, duration=1.0)
    assert len(calls) == 1  # a segment: libsndfile, which seeks
    by_sndfile = audio.soxr.resample(sf.read(path, dtype="float32")[0].mean(axis=1), 48000, audio.SR, quality="HQ")
    assert len(whole) == len(by_sndfile)  # same length and alignment, up to the two decoders' rounding
    np.testing.assert_allclose(whole[:-80], by_sndfile[:-80], atol=2e-3)  # the decoders end the last 6 ms apart
    np.testing.assert_allclose(seg, whole[2 * audio.SR : 3 * audio.SR], atol=2e-3)


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 96000])
def test_odd_sample_rates_resample_to_exact_length(tmp_path, sr):
    path = write(tmp_path / "a.wav", tone(2.0, sr), sr, subtype="FLOAT")
    y = audio.load(path)
    assert len(y) == 2 * audio.SR


def test_segment_read_matches_full_decode(tmp_path):
    sr = 44100
    path = write(tmp_path / "long.flac", tone(20.0, sr, freq=300.0), sr)
    full = audio.load(path)
    seg = audio.load(path, offset=12.25, duration=1.0)
    assert len(seg) == audio.SR
    ref = full[int(12.25 * audio.SR) : int(13.25 * audio.SR)]
    assert np.max(np.abs(seg - ref)) < 1e-3


def test_segment_past_end_is_an_error(tmp_path):
    path = write(tmp_path / "a.wav", tone(2.0), 8000)
    with pytest.raises(audio.AudioError, match="past the end"):
        audio.load(path, offset=1.5, duration=1.0)


def test_multichannel_is_downmixed(tmp_path):
    x = tone(2.0, 16000)
    stereo = np.stack([x, 0.5 * x, np.zeros_like(x), x], axis=1)
    y = audio.load(write(tmp_path / "quad.wav", stereo, 16000, subtype="FLOAT"))
    mono = audio.load(write(tmp_path / "mono.wav", stereo.mean(axis=1), 16000, subtype="FLOAT"))
    np.testing.assert_allclose(y, mono, atol=1e-6)


def test_channels_that_cancel_fall_back_to_the_loudest(tmp_path):
    x = tone(2.0, 8000)
    y = audio.load(write(tmp_path / "phase.wav", np.stack([x, -x], axis=1), 8000, subtype="FLOAT"))
    np.testing.assert_allclose(y, x, atol=1e-6)


def _bad_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("this is not audio")
    (tmp_path / "random.flac").write_bytes(np.random.default_rng(0).bytes(4096))
    good = tmp_path / "ok.wav"
    write(good, tone(2.0), 8000)
    (tmp_path / "truncated.wav").write_bytes(good.read_bytes()[:30])
    sf.write(str(tmp_path / "noframes.wav"), np.zeros((0,), np.float32), 8000)
    nan = tone(2.0)
    nan[100] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 8000, subtype="FLOAT")
    inf = tone(2.0)
    inf[5] = np.inf
    sf.write(str(tmp_path / "inf.wav"), inf, 8000, subtype="DOUBLE")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, np.float32), 8000)
    sf.write(str(tmp_path / "short.wav"), tone(0.4), 8000)
    return {
        "empty.wav": "empty file",
        "text.mp3": "not a decodable audio file",
        "random.flac": "not a decodable audio file",
        "truncated.wav": "not a decodable audio file|no audio samples",
        "noframes.wav": "no audio samples",
        "nan.wav": "NaN or infinite",
        "inf.wav": "NaN or infinite",
        "silent.wav": "silent",
        "short.wav": "too short",
        "missing.wav": "file not found",
    }


def test_bad_inputs_raise_clear_errors_naming_the_file(tmp_path):
    for name, reason in _bad_files(tmp_path).items():
        with pytest.raises(audio.AudioError, match=reason) as info:
            audio.load(tmp_path / name, min_duration=1.0)
        assert str(tmp_path / name) in str(info.value), name
        assert info.value.path == str(tmp_path / name)


def test_silent_allowed_on_request(tmp_path):
    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, np.float32), 8000)
    assert not audio.load(tmp_path / "silent.wav", allow_silent=True).any()


def test_list_audio(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        audio.list_audio(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no audio files"):
        audio.list_audio(tmp_path)
    write(tmp_path / "b" / "x.FLAC", tone(1.0), 8000)
    write(tmp_path / "a.wav", tone(1.0), 8000)
    assert [p.name for p in audio.list_audio(tmp_path)] == ["a.wav", "x.FLAC"]


def test_write_is_atomic_and_refuses_nan(tmp_path):
    target = tmp_path / "out.wav"
    audio.write(target, tone(1.0))
    before = target.read_bytes()
    bad = tone(1.0)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        audio.write(target, bad)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temporary file left behind


@pytest.mark.parametrize("ext", ["m4a", "aac", "webm"])
def test_phone_formats_decode_through_pyav(tmp_path, ext):
    """m4a (AAC, as phones record), raw AAC and webm (Opus): written by PyAV's encoders, decoded by its
    decoders, to 8 kHz mono float32 like every other format."""
    x = tone(3.0, 16000, freq=440.0)
    path = tmp_path / f"phone.{ext}"
    audio.write(path, np.stack([x, x], axis=1), 16000)  # stereo, as phones record
    assert path.read_bytes()[:64] and not sf.available_formats().get(ext.upper())  # libsndfile cannot read it
    i = audio.info(path)
    assert i.channels == 2 and abs(i.duration - 3.0) < 0.1
    y = audio.load(path, min_duration=1.0)
    # AAC adds 1024 samples of encoder delay and pads the last frame; only m4a has the edit list that trims them
    assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) - 3 * audio.SR) <= 0.1 * audio.SR
    spec = np.abs(np.fft.rfft(y[4000:12000]))
    assert abs(np.argmax(spec) * audio.SR / 8000 - 440) < 10
    seg = audio.load(path, offset=1.25, duration=1.0)
    assert len(seg) == audio.SR
    np.testing.assert_allclose(seg, y[10000:18000], atol=2e-3)  # a segment is the same audio as the full decode
    assert [p.name for p in audio.list_audio(tmp_path)] == [path.name]  # folder scans include it


def test_bad_pyav_files_raise_clear_errors(tmp_path):
    (tmp_path / "text.m4a").write_text("this is not audio")
    good = tmp_path / "ok.m4a"
    audio.write(good, tone(3.0, 16000), 16000)
    (tmp_path / "cut.m4a").write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.wma").write_bytes(b"")
    for name, reason in (
        ("text.m4a", "not a decodable audio file"),
        ("cut.m4a", "not a decodable|decod"),
        ("empty.wma", "empty file"),
        ("missing.aac", "file not found"),
    ):
        with pytest.raises(audio.AudioError, match=reason) as info:
            audio.load(tmp_path / name)
        assert info.value.path == str(tmp_path / name)
    with pytest.raises(ValueError, match="writes"):
        audio.write(tmp_path / "x.wma", tone(1.0))


def test_a_long_ogg_vorbis_file_is_written_whole(tmp_path):
    """libsndfile's Vorbis encoder crashed the process (SIGSEGV) on a minute of audio written in one call; the
    write is made in blocks (in a child process, so that a crash fails this test instead of ending the run)."""
    code = (
        "import numpy as np; from fplib import audio; "
        "x = (np.random.default_rng(0).standard_normal(44100 * 70) * 0.1).astype('float32'); "
        f"audio.write({str(tmp_path / 'long.ogg')!r}, x, 44100)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert abs(audio.info(tmp_path / "long.ogg").duration - 70.0) < 0.1
