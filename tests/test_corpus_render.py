"""Scores in the corpus (fplib.corpus_render.Renderer): MIDI files rendered through a soundfont, tracker modules
rendered by openmpt123, each with settings drawn from its key and recorded with its licence; a file the
tool cannot render is skipped with the tool's reason. SoundFonts of recorded noise (Calf Vinyl's) are read
by fplib.corpus_render.soundfont_samples and looped into noise files. The Debian packages are fakes built here with
dpkg-deb, and so are the two tools (scripts on PATH that write a tone and log how they were called): the
real FluidSynth and openmpt123 come as Debian packages, which tests cannot download."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fplib import audio, corpus, corpus_render
from fplib.corpus_packages import CorpusError, Item, Source

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

PKG, FONTS = "fake-scores", ("fake-font-a", "fake-font-b")
MIDI, MODS = "usr/share/fake-scores/midi", "usr/share/fake-scores/modules"
SF2 = "usr/share/fake-scores/sf2"


def _sf2(samples: list[tuple[str, np.ndarray, int, int, int]]) -> bytes:
    """A SoundFont 2 file holding ``(name, int16 samples, rate, link, type)`` (type 4 left, 2 right, 1 mono)."""
    import struct

    def chunk(cid: bytes, data: bytes) -> bytes:
        return cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)

    smpl, shdr = b"", b""
    for name, pcm, rate, link, kind in samples:
        start = len(smpl) // 2
        smpl += pcm.astype("<i2").tobytes() + b"\0" * 92  # 46 zero samples after each, as the format asks
        end = start + len(pcm)
        shdr += struct.pack("<20sIIIIIBbHH", name.encode(), start, end, start, end, rate, 60, 0, link, kind)
    shdr += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    body = (
        b"sfbk"
        + chunk(b"LIST", b"INFO" + chunk(b"ifil", struct.pack("<HH", 2, 1)))
        + chunk(b"LIST", b"sdta" + chunk(b"smpl", smpl))
        + chunk(b"LIST", b"pdta" + chunk(b"shdr", shdr))
    )
    return chunk(b"RIFF", body)


TICK = np.round(8000 * np.sin(np.linspace(0, 40 * np.pi, 4000))).astype(np.int16)  # 0.25 s at 16 kHz

FAKE_TOOL = '''#!{python}
"""A stand-in for {name}: writes a 40-s tone (amplitude = its gain) where it is told, logs its arguments."""
import json, sys
import numpy as np, soundfile as sf
args = sys.argv[1:]
if args == ["--version"]:
    print("{name} 0.0 (fake)"); sys.exit(0)
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
src = args[-1]
if open(src, "rb").read(3) == b"BAD":
    print("{name}: not a score it can read", file=sys.stderr); sys.exit(1)
if "{name}" == "fluidsynth":
    out, sr, amp = args[args.index("-F") + 1], int(args[args.index("-r") + 1]), float(args[args.index("-g") + 1])
else:
    out, sr = args[args.index("-o") + 1], int(args[args.index("--samplerate") + 1])
    amp = 0.5 * 10 ** (float(args[args.index("--gain") + 1]) / 20)
t = np.arange(int(40 * sr)) / sr
sf.write(out, np.stack([amp * np.sin(2 * np.pi * 440 * t)] * 2, axis=1), sr)
'''


def _deb(root: Path, name: str, files: dict[str, bytes], copyright_text: str) -> None:
    pkg = root / "src" / name
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: Test <test@example.org>\nDescription: fake\n"
    )
    doc = pkg / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text)
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    r = subprocess.run(["dpkg-deb", "-b", str(pkg), str(root / "debs")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    (root / "debs").mkdir()
    midi = {f"{MIDI}/tune_{i}.mid": b"MThd fake score %d" % i for i in range(6)}
    midi[f"{MIDI}/broken.mid"] = b"BAD score"
    midi[f"{MIDI}/notes.txt"] = b"not a score"
    mods = {f"{MODS}/song.it": b"IMPM fake module", f"{MODS}/other.xm": b"Extended Module fake"}
    fonts = {
        f"{SF2}/crackle.sf2": _sf2([("CrackleL", TICK, 16000, 1, 4), ("CrackleR", TICK // 2, 16000, 0, 2)]),
        f"{SF2}/broken.sf2": b"RIFF\x04\x00\x00\x00sfbk",
    }
    _deb(
        root,
        PKG,
        {**midi, **mods, **fonts},
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020 Somebody\nLicense: GPL-2+\n",
    )
    for i, font in enumerate(FONTS):
        _deb(
            root,
            font,
            {f"usr/share/sounds/sf2/{font}.sf2": b"sfbk fake"},
            "Licence:\n\n I hereby release it under the MIT license.\n"
            if i == 0
            else "Files: *\nCopyright: 2021 Someone\nLicense: CC0-1.0\n",
        )
    bin_dir, log = root / "bin", root / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("fluidsynth", "openmpt123"):
        tool = bin_dir / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable, name=name, log=str(log)))
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    tiny = _tiny_score(root / "tiny.musicxml", None)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(corpus, "music21_works", lambda: [(str(tiny), "Public Domain (encoding CC0)")])
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        mp.setattr(
            corpus,
            "SOURCES",
            (
                Source(PKG, "music", (f"{MIDI}/*",), render="midi"),
                Source(PKG, "music", (f"{MODS}/*",), render="module"),
                Source(PKG, "noise", (f"{SF2}/*",), render="soundfont"),
                Source("music21", "music", (), render="music21"),
            ),
        )
        mp.setattr(corpus_render, "SOUNDFONTS", tuple((f, f"usr/share/sounds/sf2/{f}.sf2") for f in FONTS))
        mp.setattr(corpus, "ROOMS", {"train": 1, "val": 1})
        mp.setattr(corpus, "SYNTHETIC_NOISES", {"train": 1, "val": 1})
        manifest = corpus.build(root / "out", root / "debs", progress=False, dedupe=False, log=lambda s: None)
    finally:
        mp.undo()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return {"out": root / "out", "manifest": manifest, "calls": calls, "bin": bin_dir}


def _by_file(rendered) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in rendered["manifest"]["files"] if r["package"] != "music21"}


@pytest.mark.slow
def test_scores_are_rendered_resampled_and_kept_as_songs(rendered):
    files = _by_file(rendered)
    assert "notes.txt" not in files  # only the score files of a render source
    kept = [r for r in files.values() if r["status"] == "kept" and r["role"] == "music"]
    assert sorted(Path(r["file"]).name for r in kept) == sorted(
        [*(f"tune_{i}.mid" for i in range(6)), "song.it", "other.xm"]
    )
    for r in kept:
        wav, sr = audio.load(rendered["out"] / r["path"]), corpus.audio.SR
        assert r["path"].startswith(f"{r['split']}/music/{PKG}/") and r["path"].endswith(".flac")
        assert abs(len(wav) / sr - 40.0) < 0.05 and r["seconds"] == pytest.approx(40.0, abs=0.05)
        assert corpus.decoded_sha256(wav) == r["sha256"]


def test_each_score_is_rendered_as_its_key_draws_and_the_manifest_says_how(rendered, monkeypatch):
    files = _by_file(rendered)
    midi = [r for name, r in files.items() if name.startswith("tune_")]
    assert {r["rendered_with"]["soundfont"] for r in midi} == set(FONTS)  # both fonts drawn over six tunes
    for r in midi:
        how = r["rendered_with"]
        call = next(c for c in rendered["calls"] if c[-1].endswith(Path(r["file"]).name))
        assert call[call.index("-g") + 1] == str(how["gain"]) and call[-2].endswith(f"{how['soundfont']}.sf2")
        assert call[call.index("-R") + 1] == str(int(how["reverb"])) and 0.2 <= how["gain"] <= 0.45
        font_licence = "MIT" if how["soundfont"] == FONTS[0] else "CC0-1.0"
        assert r["licence"] == f"GPL-2+; rendered through {how['soundfont']} ({font_licence}), FluidSynth"
        wav = audio.load(rendered["out"] / r["path"])
        assert np.abs(wav).max() == pytest.approx(how["gain"], abs=0.01)  # the gain drawn is the gain used
    mod = files["song.it"]
    assert mod["rendered_with"]["tool"] == "openmpt123" and "the module's own samples" in mod["licence"]
    call = next(c for c in rendered["calls"] if c[-1].endswith("song.it"))
    assert call[call.index("--repeat") + 1] == "0" and call[call.index("--channels") + 1] == "1"
    # the draw is a function of the key: the same settings on every run and machine
    monkeypatch.setattr(corpus_render, "SOUNDFONTS", tuple((f, f"usr/share/sounds/sf2/{f}.sf2") for f in FONTS))
    item = Item(Source(PKG, "music", (), render="midi"), Path("x"), midi[0]["file"])
    assert corpus_render.Renderer.settings(None, item) == midi[0]["rendered_with"]


def test_each_music21_work_is_rendered_in_versions_of_its_own_split_and_licence(rendered):
    works = [r for r in rendered["manifest"]["files"] if r["package"] == "music21"]
    assert len(works) == corpus.SCORE_VERSIONS and all(r["status"] == "kept" for r in works)
    assert len({r["split"] for r in works}) == 1  # split by work: its versions never straddle train and val
    assert len({r["path"] for r in works}) == corpus.SCORE_VERSIONS and len({r["sha256"] for r in works}) > 1
    assert rendered["manifest"]["packages"]["music21"]  # the version of music21 that read them
    for r in works:
        how = r["rendered_with"]
        assert how["tool"] == "music21 + fluidsynth" and 0.8 <= how["tempo"] <= 1.25
        assert all(0 <= p < corpus_render.GM_MELODIC for p in how["programs"])
        assert r["licence"] == (
            f"Public Domain (encoding CC0); rendered through {how['soundfont']} "
            f"({'MIT' if how['soundfont'] == FONTS[0] else 'CC0-1.0'}), FluidSynth"
        )
        call = next(
            c for c in rendered["calls"] if c[-1].endswith("score.mid") and c[c.index("-g") + 1] == str(how["gain"])
        )
        assert call[-2].endswith(f"{how['soundfont']}.sf2")


def test_a_score_the_tool_cannot_render_is_skipped_with_its_reason(rendered):
    r = _by_file(rendered)["broken.mid"]
    assert r["status"] == "skipped" and "fluidsynth could not render it" in r["reason"]
    assert "not a score it can read" in r["reason"]


def test_a_tool_that_does_not_run_is_a_corpus_error(rendered, tmp_path, monkeypatch):
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "openmpt123").write_text("#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
    (broken / "openmpt123").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(CorpusError, match="openmpt123 does not run here .*shared libraries.*--packages"):
        corpus_render.Renderer(tmp_path / "out", tmp_path / "debs", {"module"})


def test_a_soundfonts_samples_are_looped_into_a_noise_file(rendered):
    files = _by_file(rendered)
    r = files["crackle.sf2"]
    assert r["status"] == "kept" and r["role"] == "noise" and r["path"].startswith(f"{r['split']}/noise/{PKG}/")
    assert r["rendered_with"] == {"tool": "soundfont samples", "looped_to_s": corpus_render.LOOP_TO_S}
    assert r["licence"] == "GPL-2+; rendered through its own samples, looped"
    wav = audio.load(rendered["out"] / r["path"])
    assert len(wav) == int(corpus_render.LOOP_TO_S * audio.SR)
    # the stereo pair down-mixed (left + right at half amplitude: 0.75 of the left), resampled, repeated
    pair = corpus_render.soundfont_samples(rendered["out"] / "unpacked" / PKG / SF2 / "crackle.sf2")
    assert [(n, len(w), sr) for n, w, sr in pair] == [("Crackle", len(TICK), 16000)]
    assert np.allclose(pair[0][1], 0.75 * TICK / 32768.0, atol=1e-4)
    assert np.abs(wav).max() == pytest.approx(0.75 * 8000 / 32768, rel=0.1)
    period = audio.SR // 4  # 0.25 s at the corpus's rate: the loop repeats
    assert np.allclose(wav[period : 2 * period], wav[2 * period : 3 * period], atol=2e-3)
    bad = files["broken.sf2"]
    assert bad["status"] == "skipped" and "broken.sf2" not in bad.get("path", "")
    assert "SoundFont" in bad["reason"]


def test_the_real_sources_name_their_renderers():
    rendered = [s for s in corpus.SOURCES if s.render]
    assert {s.package for s in rendered} == {
        "openttd-openmsx",
        "kobodeluxe-data",
        "pingus-data",
        "calf-plugins",
        "music21",
    }
    assert all(
        s.render in corpus_render.TOOLS and s.role == "music" for s in rendered if s.render in ("midi", "module")
    )
    assert [s.role for s in rendered if s.render == "music21"] == ["music"]
    assert [s.role for s in rendered if s.render == "soundfont"] == ["noise"]
    assert {p for p, _ in corpus_render.SOUNDFONTS} == {"fluid-soundfont-gm", "musescore-general-soundfont-small"}


def test_a_tools_libraries_are_what_apt_would_install(tmp_path, monkeypatch):
    """The packages unpacked beside a tool are apt's own answer (``apt-get install --simulate``), so a machine
    that lacks a library the tool loads (libsndfile1, libpulse0 on a bare Debian) gets it; where apt cannot
    answer, the fixed list."""
    text = (
        "NOTE: This is only a simulation!\nReading package lists...\n"
        "Inst libogg0 (1.3.5-3 Debian:12.12/stable [amd64])\n"
        "Inst libsndfile1 (1.2.0-1 Debian:12.12/stable [amd64])\n"
        "Inst fluidsynth (2.3.1-2 Debian:12.12/stable [amd64])\n"
        "Conf libogg0 (1.3.5-3 Debian:12.12/stable [amd64])\n"
    )
    assert corpus_render.simulated_installs(text) == ["libogg0", "libsndfile1", "fluidsynth"]
    (tmp_path / "answer.txt").write_text(text)
    fake = tmp_path / "apt-get"
    fake.write_text(f'#!/bin/sh\n[ "$4" = fluidsynth ] || exit 100\ncat {tmp_path / "answer.txt"}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert corpus_render.tool_packages("fluidsynth", ("fallback",)) == ["fluidsynth", "libogg0", "libsndfile1"]
    assert corpus_render.tool_packages("unknown-tool", ("unknown-tool", "libx")) == ["unknown-tool", "libx"]
    binary, packages = corpus_render.TOOLS["midi"]
    assert packages[0] == "fluidsynth" and {"libsndfile1", "libpulse0"} <= set(packages)


@pytest.mark.slow
def test_music21_works_are_kept_only_with_an_open_licence_of_their_own():
    pytest.importorskip("music21")
    works = dict(corpus.music21_works())
    assert len(works) >= 8
    for path, licence in works.items():
        assert corpus.OPEN_LICENCE.search(licence) and not corpus.CLOSED_LICENCE.search(licence), (path, licence)
    # the Essen folksongs are for non-commercial use only, Palestrina's encodings state a copyright and no
    # licence, and most of the corpus states none: all left out
    assert not any(p.startswith(("essenFolksong/", "palestrina/", "bach/", "ryansMammoth/")) for p in works)
    assert "weber/concertino_clarinet.mxl" in works and "webern/webern_dormi_jesu_op_16_no_2.mxl" in works
    for bad in (
        "Copyright 2000, John Miller",
        "All Rights Reserved",
        "Copyright ©",
        "CC-BY-NC 4.0",
        "non-commercial use only (public domain melody)",
    ):
        assert not (corpus.OPEN_LICENCE.search(bad) and not corpus.CLOSED_LICENCE.search(bad)), bad


def _tiny_score(path: Path, metronome: int | None) -> Path:
    from music21 import meter, note, stream, tempo

    score = stream.Score()
    for pitches in (("C4", "E4", "G4", "C5"), ("C3", "G3", "C3", "G3")):
        part = stream.Part()
        part.append(meter.TimeSignature("4/4"))
        for p in pitches:
            part.append(note.Note(p, quarterLength=1.0))
        score.append(part)
    if metronome:
        score.parts[0].insert(0, tempo.MetronomeMark(number=metronome))
    score.write("musicxml", fp=str(path))
    return path


@pytest.mark.parametrize("metronome", [None, 90])
def test_a_music21_score_is_written_with_the_drawn_instruments_loudness_and_tempo(tmp_path, metronome):
    pytest.importorskip("music21")
    from music21 import midi

    how = {"programs": [40, 33, 0], "velocities": [100, 70], "tempo": 1.25}
    out = corpus_render.music21_midi(_tiny_score(tmp_path / "tiny.musicxml", metronome), how, tmp_path / "tiny.mid")
    mf = midi.MidiFile()
    mf.open(str(out))
    mf.read()
    mf.close()
    events = [e for t in mf.tracks for e in t.events]
    programs = sorted({e.data for e in events if e.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE})
    assert programs == [33, 40]
    velocities = {e.velocity for e in events if e.type == midi.ChannelVoiceMessages.NOTE_ON and e.velocity}
    assert sorted(velocities) == [70, 100]
    for track in mf.tracks:  # each channel silenced at its track's end (FluidSynth renders until no voice sounds)
        used = {e.channel for e in track.events if e.isNoteOn()}
        tail = [
            (e.channel, e.parameter1)
            for e in track.events[-4 * len(used) - 1 : -1]
            if not isinstance(e, midi.DeltaTime)
        ]  # read back as ALL_NOTES_OFF and ALL_SOUND_OFF
        assert sorted(tail) == sorted((c, cc) for c in used for cc in (120, 123))
    us = [int.from_bytes(e.data, "big") for e in events if e.type == midi.MetaEvents.SET_TEMPO]
    quarter = 60_000_000 / (metronome or 120)  # MIDI's default tempo where the score has none
    assert us and all(u == pytest.approx(quarter / 1.25, abs=1) for u in us)
    with pytest.raises(audio.AudioError, match="music21 cannot read it"):
        corpus_render.music21_midi(tmp_path / "tiny.mid.missing", how, tmp_path / "x.mid")


def test_a_renderer_that_does_not_stop_is_stopped_at_the_cap(tmp_path, monkeypatch):
    """FluidSynth renders until no voice sounds: a note left on would fill the disk. The render is stopped
    once its file holds MAX_RENDER_S (+30) seconds, and the file is then skipped with that reason."""
    monkeypatch.setattr(corpus_render, "MAX_RENDER_S", 0)
    renderer = corpus_render.Renderer.__new__(corpus_render.Renderer)  # only its environment is needed to run a command
    renderer.env = dict(os.environ)
    wav = tmp_path / "out.wav"
    endless = (
        "import sys, time\nf = open(sys.argv[1], 'wb')\nwhile True:\n"  # at most 64 MB/s, as a fast renderer
        "    f.write(bytes(65536)); f.flush(); time.sleep(0.001)\n"
    )
    assert renderer._run_capped([sys.executable, "-c", endless, str(wav)], wav) == (None, "")
    assert 30 * corpus_render.RENDER_SR * 8 < wav.stat().st_size < 100 * 2**20  # stopped soon after the cap
    failing = [sys.executable, "-c", "print('rendered'); raise SystemExit(3)"]
    assert renderer._run_capped(failing, tmp_path / "none.wav") == (3, "rendered")
