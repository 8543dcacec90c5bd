"""Answers that mislead (issue 29): input that is read wrongly, or that cannot teach or calibrate anything,
is named as such instead of giving a confident wrong answer or nothing at all. Real files, real commands
in real processes, real symbolic links.

* raw PCM on standard input read with a wrong ``--format``, ``--rate`` or ``--channels``, and empty input;
* silent training songs and negatives, and training validated on its own training songs;
* a symbolic link to a sub-folder of a music folder (followed), and one that loops (skipped, said);
* the hint to convert a catalogue's store, run as printed;
* a crafted ``last.pt`` given to ``trainer --resume``.
"""

from __future__ import annotations

import functools
import glob
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr

from fplib import audio, cli, streams
from tests.helpers import music_like, tone

ROOT = Path(__file__).resolve().parents[1]
SONG_S = 20.0
REAL_MUSIC = sorted(glob.glob(str(ROOT / "benchmarks/real_music/data/supertux-data/**/music/**/*.ogg"), recursive=True))


# -- raw PCM read as it was written ------------------------------------------------------------------------


def _s16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _f32(x: np.ndarray) -> bytes:
    return np.asarray(x, "<f4").tobytes()


@functools.cache
def _signals() -> dict[str, tuple[np.ndarray, int]]:
    """Recordings as they are sent: ``float32 [T, C]`` and their rate; synthetic ones at several rates and
    channel counts (music, a tone, white noise, a square wave, a wide stereo mix), and real decoded music
    when the real-music benchmark's data is here."""
    rng = np.random.default_rng(0)
    out: dict[str, tuple[np.ndarray, int]] = {}
    for sr in (8000, 16000, 44100):
        m = music_like(4.0, sr, seed=sr)
        out[f"music mono {sr}"] = (m[:, None], sr)
        out[f"music stereo {sr}"] = (np.stack([m, 0.8 * m + 0.1 * music_like(4.0, sr, seed=sr + 1)], 1), sr)
        out[f"wide stereo {sr}"] = (np.stack([m, music_like(4.0, sr, seed=sr + 2)], 1), sr)
        out[f"white noise {sr}"] = ((0.3 * rng.standard_normal((int(4 * sr), 1))).astype(np.float32), sr)
    out["tone 16000"] = (tone(4.0, 16000, 440.0)[:, None], 16000)
    out["square 16000"] = ((0.5 * np.sign(tone(4.0, 16000, 440.0, amp=1.0)))[:, None].astype(np.float32), 16000)
    for f in [f for f in REAL_MUSIC if audio.info(f).duration > 40][::8][:6]:
        x = audio.load(f, 44100, offset=30.0, duration=4.0)  # mono at 44.1 kHz (the files are stereo)
        out[f"real {Path(f).name}"] = (x[:, None], 44100)
    return out


def test_samples_read_as_written_show_no_sign_and_misread_ones_do():
    """misread_signs on every signal read right (no sign), and read with the wrong format (the float's
    upper halves; integers as floats is an error) or channel count (a mono reading of stereo that is
    nearly the same on both channels; a stereo reading of smooth mono)."""
    for name, (x, _) in _signals().items():
        c = x.shape[1]
        for fmt, data in (("s16le", _s16(x)), ("f32le", _f32(x)), ("f32le", _f32(32767 * x))):  # floats as ints
            assert streams.misread_signs(streams.pcm_samples(data, fmt, c), fmt) == (None, []), (name, fmt)
        if "square" in name:  # +-0.5 exactly: as floats, upper halves only; as integers, floats of +-2 to 4
            continue
        error, _ = streams.misread_signs(streams.pcm_samples(_s16(x), "f32le", c), "f32le")
        assert error is not None and "s16le?" in error, name
        error, warnings = streams.misread_signs(streams.pcm_samples(_f32(x), "s16le", c), "s16le")
        assert error is None and len(warnings) == 1 and "f32le read as s16le" in warnings[0], name
    for name in ("music stereo 16000", "music stereo 44100"):
        x, _ = _signals()[name]
        close = np.stack([x[:, 0], x[:, 0] + 0.01 * x[:, 1]], 1)  # nearly the same on both channels
        _, warnings = streams.misread_signs(streams.pcm_samples(_s16(close), "s16le", 1), "s16le")
        assert len(warnings) == 1 and "2 channels read as 1" in warnings[0], name
    seen = {}  # one channel read as two: seen in smooth music (not in all: the recogniser's readings do more)
    for name in [n for n in _signals() if n.startswith(("music mono", "real"))]:
        x, _ = _signals()[name]
        _, warnings = streams.misread_signs(streams.pcm_samples(_s16(x), "s16le", 2), "s16le")
        seen[name] = len(warnings) == 1 and "1 channel read as 2" in warnings[0]
    assert all(v for n, v in seen.items() if n.startswith("music")) and sum(seen.values()) >= len(seen) / 2, seen


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Four songs (16 kHz) fingerprinted by the shipped model, indexed; no threshold file, so the shipped
    model's calibrated threshold decides; and a song that is not in the catalogue."""
    root = tmp_path_factory.mktemp("inputs")
    for i in range(5):
        audio.write(
            root / ("songs" if i < 4 else "out") / f"song_{i}.flac", music_like(SONG_S, 16000, seed=40 + i), 16000
        )
    assert cli.main(["generate_fingerprints", "-i", str(root / "songs"), "-o", str(root / "cat"), "--no_progress"]) == 0
    assert cli.main(["create_faiss_indexes", "-i", str(root / "cat"), "-n", "x", "-o", str(root / "idx")]) == 0
    return {"root": root, "cat": root / "cat", "index": root / "idx" / "x.index"}


def _listen(catalogue, flags: list[str], data: bytes) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fplib.cli", "listen", "-", *flags]
    cmd += ["--catalogue", str(catalogue["cat"]), "--index", str(catalogue["index"]), "--no-realtime", "--json"]
    return subprocess.run(cmd, input=data, capture_output=True, cwd=ROOT, timeout=600)


def _warnings(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in r.stderr.decode().splitlines() if ln.startswith("warning:")]


@pytest.mark.slow
def test_raw_pcm_read_with_wrong_flags_is_said_to_be_misread(catalogue):
    """song_2 from 3 s in, 14 s, sent as 16-kHz mono s16le, as 44.1-kHz stereo and as f32le: read right it
    is named without a warning; read at 44.1 kHz (the issue's case), as one channel when it has two, as
    two when it has one, or as s16le when it is f32le, a warning names the flags that read it as song_2;
    s16le read as f32le is an error (exit 2)."""
    song = audio.load(catalogue["root"] / "songs" / "song_2.flac", 16000, offset=3.0, duration=14.0)
    up = soxr.resample(song, 16000, 44100).astype(np.float32)
    stereo = np.stack([up, 0.7 * up], 1)
    right = _listen(catalogue, ["--format", "s16le", "--rate", "16000"], _s16(song))
    assert right.returncode == 0 and _warnings(right) == [], right.stderr.decode()
    assert right.stdout.decode().count('"name": "song_2"') >= 1
    cases = {
        "--rate 16000": (["--format", "s16le", "--rate", "44100"], _s16(song)),
        "--channels 2": (["--format", "s16le", "--rate", "44100"], _s16(stereo)),
        "--channels 1": (["--format", "s16le", "--rate", "16000", "--channels", "2"], _s16(song)),
        "--format f32le": (["--format", "s16le", "--rate", "16000"], _f32(song)),
    }
    for fix, (flags, data) in cases.items():
        r = _listen(catalogue, flags, data)
        said = " ".join(_warnings(r))
        assert r.returncode == 0 and "may be misread" in said and "it is song_2" in said, (fix, r.stderr.decode())
        assert fix in said, (fix, said)
    r = _listen(catalogue, ["--format", "f32le", "--rate", "16000"], _s16(song))
    err = r.stderr.decode().strip().splitlines()[-1]
    assert r.returncode == 2 and err.startswith("error: standard input: ") and "s16le?" in err, err


@pytest.mark.slow
def test_music_not_in_the_catalogue_read_right_gives_no_warning(catalogue):
    """Out-of-catalogue music read right: nothing named, and no reading of it is taken for a song."""
    out = audio.load(catalogue["root"] / "out" / "song_4.flac", 16000, duration=14.0)
    for flags, data in (
        (["--format", "s16le", "--rate", "16000"], _s16(out)),
        (["--format", "f32le", "--rate", "16000", "--channels", "2"], _f32(np.stack([out, 0.5 * out], 1))),
    ):
        r = _listen(catalogue, flags, data)
        assert r.returncode == 0 and _warnings(r) == [] and r.stdout.decode() == "", r.stderr.decode()


@pytest.mark.slow
def test_empty_standard_input_says_there_is_no_audio(catalogue):
    for flags in (["--format", "s16le", "--rate", "16000"], []):
        r = _listen(catalogue, flags, b"")
        assert r.returncode == 2, r.stderr.decode()
        assert r.stderr.decode().strip().splitlines()[-1] == "error: no audio on standard input"


# -- music folders with symbolic links ---------------------------------------------------------------------


def _linked_music(tmp_path: Path) -> Path:
    """music/live/a.wav; music/album links to a folder elsewhere holding b.wav; music/live/again links back
    to music (a loop); music/same links to music/live (a folder scanned anyway)."""
    music, elsewhere = tmp_path / "music", tmp_path / "elsewhere" / "album"
    audio.write(music / "live" / "a.wav", music_like(4.0, 8000, seed=1), 8000)
    audio.write(elsewhere / "b.wav", music_like(4.0, 8000, seed=2), 8000)
    (music / "album").symlink_to(elsewhere, target_is_directory=True)
    (music / "live" / "again").symlink_to(music, target_is_directory=True)
    (music / "same").symlink_to(music / "live", target_is_directory=True)
    return music


def test_a_linked_sub_folder_is_followed_and_a_loop_is_skipped_with_its_reason(tmp_path):
    """The linked folder's song is listed, named through the link; the loop and the link to a folder
    scanned anyway are not followed (no song listed twice), and each is listed with its reason."""
    music = _linked_music(tmp_path)
    files, problems, ignored = audio.collect_audio([music])
    assert files == [(str(music / "album" / "b.wav"), str(music)), (str(music / "live" / "a.wav"), str(music))]
    assert problems == []
    assert ignored == [
        f"{music / 'live' / 'again'} (a link to {music.resolve()}, a folder that holds it: not followed (a loop))",
        f"{music / 'same'} (a link to {(music / 'live').resolve()}, which is scanned anyway: not followed)",
    ]
    assert audio.list_audio(music) == [music / "album" / "b.wav", music / "live" / "a.wav"]


@pytest.mark.slow
def test_generate_fingerprints_takes_a_linked_folder_and_says_what_it_did_not_follow(tmp_path, capsys):
    music = _linked_music(tmp_path)
    capsys.readouterr()
    assert cli.main(["generate_fingerprints", "-i", str(music), "-o", str(tmp_path / "cat"), "--no_progress"]) == 0
    out, err = capsys.readouterr()
    assert "2 song(s) added" in out and "a folder that holds it: not followed (a loop)" in err, err
    assert cli.main(["db", "list", "--catalogue", str(tmp_path / "cat")]) == 0
    assert "album/b.wav" in capsys.readouterr().out


# -- hints that are commands -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_float16_hint_is_a_command_that_works_when_copied(tmp_path, capsys):
    """A float32 catalogue (in a folder whose name has a space) given --store_dtype float16: the error ends
    with the command that converts it; run as printed (by a shell), it converts it, and the same
    generate_fingerprints then works."""
    songs, cat = tmp_path / "songs", tmp_path / "my cat"
    audio.write(songs / "a.wav", music_like(4.0, 8000, seed=3), 8000)
    argv = ["generate_fingerprints", "-i", str(songs), "-o", str(cat), "--no_progress"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--store_dtype", "float16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "convert it: fplib db compact" in err, err
    command = err.split("convert it: ", 1)[1]
    bin_dir = Path(sys.executable).parent
    r = subprocess.run(
        command, shell=True, capture_output=True, text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=300
    )
    assert r.returncode == 0, (command, r.stderr)
    assert cli.main([*argv, "--store_dtype", "float16"]) == 0
    assert shlex.split(command)[:3] == ["fplib", "db", "compact"]


# -- checkpoints that are not this project's ----------------------------------------------------------------

TORCH_ADVICE = ("weights_only", "file an issue", "safe_globals", "torch.load", "trust the source")


def _crafted(folder: Path) -> dict[str, Path]:
    """torch files whose unpickling needs what fplib never unpickles: a global torch refuses (its message
    then advises weights_only=False), and an opcode torch's safe unpickler lacks (then: "file an issue")."""
    import argparse
    import zipfile

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "epoch": argparse.Namespace(epoch=3)}, folder / "global.pt")
    torch.save({"model": {}}, folder / "plain.pt")
    with zipfile.ZipFile(folder / "plain.pt") as src, zipfile.ZipFile(folder / "opcode.pt", "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"(i__main__\nX\n." if name.endswith("data.pkl") else src.read(name))
    return {"global": folder / "global.pt", "opcode": folder / "opcode.pt"}


def test_no_checkpoint_load_passes_on_torchs_advice(tmp_path):
    """Every way a checkpoint is loaded (the safe loader, a model, a model's description, a fine-tuning start)
    names the file as not an fplib checkpoint, and never relays torch's advice to load it unsafely."""
    from fplib import checkpoints, train
    from fplib.errors import BadFileError
    from fplib.features import FrontEnd

    for kind, path in _crafted(tmp_path).items():
        loads = {
            "load_checkpoint": lambda p=path: checkpoints.load_checkpoint(p),
            "load_model": lambda p=path: checkpoints.load_model(p),
            "model_description": lambda p=path: checkpoints.model_description(p),
            "init": lambda p=path: train._load_init(None, {}, FrontEnd(), "nafp_small", p),
        }
        for how, load in loads.items():
            with pytest.raises(BadFileError) as e:
                load()
            said = str(e.value)
            assert said.startswith(f"{path}: ") and "not an fplib checkpoint" in said, (kind, how, said)
            assert not any(a in said for a in TORCH_ADVICE), (kind, how, said)


@pytest.mark.slow
def test_trainer_resume_on_a_crafted_last_pt_says_it_is_not_a_checkpoint(tmp_path, capsys):
    from tests.helpers import make_folders

    d = make_folders(tmp_path / "in", n_songs=3, seconds=4.0)
    files = _crafted(tmp_path / "crafted")
    files["no training state"] = tmp_path / "crafted" / "plain.pt"  # loads, but holds no training state
    for kind, crafted in files.items():
        out = tmp_path / kind.replace(" ", "_")
        (out / "tiny").mkdir(parents=True)
        (out / "tiny" / "last.pt").write_bytes(crafted.read_bytes())
        argv = ["trainer", "-ep", "1", "-bs", "4", "--arch", "nafp_small", "--model_settings", '{"width": 0.125}']
        argv += ["-m", "tiny", "-o", str(out), "--device", "cpu", "--resume", "dynamic_online", "-p", str(d["songs"])]
        argv += ["-ir", str(d["rir"]), "-bn", str(d["noise"])]
        capsys.readouterr()
        assert cli.main(argv) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"error: {out / 'tiny' / 'last.pt'}: not a"), last
        assert "not an fplib checkpoint" in last or "not an fplib training checkpoint (no 'model_name'" in last, last
        assert not any(a in last for a in TORCH_ADVICE), last


# -- silent songs: nothing to train or calibrate on --------------------------------------------------------


@pytest.mark.slow
def test_calibration_leaves_silent_negatives_out_and_names_them(catalogue, tmp_path):
    """Two songs not in the catalogue and a silent file: the silent one contributes no query, so it is
    listed as left out (with the reason), not as used."""
    from fplib.calibrate import calibrate_recognizer
    from fplib.data import IRBank, NoiseBank
    from fplib.search import recognizer_from_files
    from tests.helpers import make_folders

    d = make_folders(tmp_path / "aux", n_songs=0)
    negatives = [
        catalogue["root"] / "out" / "song_4.flac",
        tmp_path / "neg" / "other.wav",
        tmp_path / "neg" / "hush.wav",
    ]
    audio.write(negatives[1], music_like(12.0, 8000, seed=77), 8000)
    audio.write(negatives[2], np.zeros(12 * 8000, np.float32), 8000)
    rec = recognizer_from_files(None, catalogue["cat"], catalogue["index"], no_threshold=True)
    irs, noises = IRBank(audio.list_audio(d["rir"])), NoiseBank(audio.list_audio(d["noise"]))
    cal = calibrate_recognizer(rec, negatives, irs, noises, 0.05, (1.0, 2.0), (10.0,), 2, 1, progress=False)
    used = cal.negatives.calibration + cal.negatives.test
    assert sorted(used) == sorted(map(str, negatives[:2]))
    assert [(f, r.split(":")[0]) for f, r in cal.negatives.skipped] == [
        (str(negatives[2]), "silent (peak -inf dBFS, below -70 dBFS)")
    ]


def _silent_and_music(folder: Path) -> tuple[Path, list[Path]]:
    """A silent song (4 s of digital zeros) and two songs of music, written in ``folder``."""
    silent = folder / "hush.flac"
    audio.write(silent, np.zeros(4 * 16000, np.float32), 16000)
    music = [folder / f"m{i}.flac" for i in range(2)]
    for i, p in enumerate(music):
        audio.write(p, music_like(4.0, 16000, seed=60 + i), 16000)
    return silent, music


def test_a_silent_training_song_is_skipped_and_named(tmp_path):
    """A silent song is unusable for training (every segment of it is silence): skipped with the reason,
    decoded or not beforehand; only silent songs: no usable songs, each named."""
    from fplib.data import NoUsableFiles, SegmentDataset, Skipped

    silent, music = _silent_and_music(tmp_path / "songs")
    for preload in (False, True):
        skipped = Skipped()
        ds = SegmentDataset(sorted([silent, *music]), None, None, 0, skipped=skipped, preload=preload)
        assert ds.songs == music, preload
        assert skipped.items == [(str(silent), "silent (peak -inf dBFS, below -70 dBFS)")], preload
    with pytest.raises(NoUsableFiles) as e:
        SegmentDataset([silent], None, None, 0, skipped=Skipped(), what="training songs")
    assert str(e.value) == (
        f"no usable training songs: 1 file(s), all skipped:\n  {silent}: silent (peak -inf dBFS, below -70 dBFS)"
    )


def test_validation_songs_that_are_training_songs_are_named(tmp_path):
    """The same folder (through a link, too) for training and validation songs: shared_files names them."""
    from fplib.augment import AugmentConfig
    from fplib.data import Skipped
    from fplib.features import FrontEnd
    from fplib.sources import OnlineFolders, online_source, shared_files
    from fplib.train_config import TrainConfig

    _, music = _silent_and_music(tmp_path / "songs")
    (tmp_path / "same").symlink_to(tmp_path / "songs", target_is_directory=True)
    cfg = TrainConfig(model="nafp_small", model_settings={"width": 0.125}, batch_size=4)
    source = online_source(
        OnlineFolders(tmp_path / "songs", tmp_path / "same"), cfg, AugmentConfig(), FrontEnd(), Skipped()
    )
    assert shared_files(source) == [str(tmp_path / "same" / p.name) for p in music]
    other = tmp_path / "val"
    audio.write(other / "v.flac", music_like(4.0, 16000, seed=70), 16000)
    source = online_source(OnlineFolders(tmp_path / "songs", other), cfg, AugmentConfig(), FrontEnd(), Skipped())
    assert shared_files(source) == []


def _trainer(tmp_path: Path, songs: Path, capsys) -> tuple[int, str]:
    from tests.helpers import make_folders

    d = make_folders(tmp_path / "aux", n_songs=0)
    argv = ["trainer", "-ep", "1", "-bs", "4", "--arch", "nafp_small", "--model_settings", '{"width": 0.125}']
    argv += ["-m", "tiny", "-o", str(tmp_path / "out"), "--device", "cpu", "--items_per_song", "4"]
    argv += ["dynamic_online", "-p", str(songs), "-ir", str(d["rir"]), "-bn", str(d["noise"])]
    capsys.readouterr()
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.slow
def test_trainer_refuses_a_single_silent_song_and_warns_when_validating_on_its_training_song(tmp_path, capsys):
    """dynamic_online with one song puts it in training and validation: silent, nothing is trained (exit
    1, the song named); music, it trains with a warning naming the song validated on as well."""
    silent, music = _silent_and_music(tmp_path / "all")
    (tmp_path / "hush").mkdir()
    silent.rename(tmp_path / "hush" / silent.name)
    rc, err = _trainer(tmp_path / "a", tmp_path / "hush", capsys)
    assert rc == 1 and "no usable training songs" in err and f"{silent.name}: silent (peak -inf dBFS" in err, err
    assert not (tmp_path / "a" / "out" / "tiny.pt").exists()
    (tmp_path / "one").mkdir()
    music[0].rename(tmp_path / "one" / music[0].name)
    rc, err = _trainer(tmp_path / "b", tmp_path / "one", capsys)
    warning = [ln for ln in err.splitlines() if ln.startswith("warning: 1 validation file(s) are also training")]
    assert rc == 0 and len(warning) == 1 and music[0].name in warning[0], err
