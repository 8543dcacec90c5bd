"""Scores in the corpus (fplib.corpus.Renderer): MIDI files rendered through a soundfont, tracker modules
rendered by openmpt123, each with settings drawn from its key and recorded with its licence; a file the
tool cannot render is skipped with the tool's reason. The Debian packages are fakes built here with
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

from fplib import audio, corpus

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

PKG, FONTS = "fake-scores", ("fake-font-a", "fake-font-b")
MIDI, MODS = "usr/share/fake-scores/midi", "usr/share/fake-scores/modules"

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
    (pkg / "DEBIAN/control").write_text(f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\n"
                                        f"Maintainer: Test <test@example.org>\nDescription: fake\n")
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
    _deb(root, PKG, {**midi, **mods}, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                                      "Files: *\nCopyright: 2020 Somebody\nLicense: GPL-2+\n")
    for i, font in enumerate(FONTS):
        _deb(root, font, {f"usr/share/sounds/sf2/{font}.sf2": b"sfbk fake"},
             "Licence:\n\n I hereby release it under the MIT license.\n" if i == 0 else
             "Files: *\nCopyright: 2021 Someone\nLicense: CC0-1.0\n")
    bin_dir, log = root / "bin", root / "calls.jsonl"
    bin_dir.mkdir()
    for name in ("fluidsynth", "openmpt123"):
        tool = bin_dir / name
        tool.write_text(FAKE_TOOL.format(python=sys.executable, name=name, log=str(log)))
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        mp.setattr(corpus, "SOURCES", (corpus.Source(PKG, "music", (f"{MIDI}/*",), render="midi"),
                                       corpus.Source(PKG, "music", (f"{MODS}/*",), render="module")))
        mp.setattr(corpus, "SOUNDFONTS", tuple((f, f"usr/share/sounds/sf2/{f}.sf2") for f in FONTS))
        mp.setattr(corpus, "ROOMS", {"train": 1, "val": 1})
        mp.setattr(corpus, "SYNTHETIC_NOISES", {"train": 1, "val": 1})
        manifest = corpus.build(root / "out", root / "debs", progress=False, dedupe=False, log=lambda s: None)
    finally:
        mp.undo()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return {"out": root / "out", "manifest": manifest, "calls": calls, "bin": bin_dir}


def _by_file(rendered) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in rendered["manifest"]["files"]}


def test_scores_are_rendered_resampled_and_kept_as_songs(rendered):
    files = _by_file(rendered)
    assert "notes.txt" not in files  # only the score files of a render source
    kept = [r for r in files.values() if r["status"] == "kept"]
    assert sorted(Path(r["file"]).name for r in kept) == sorted([*(f"tune_{i}.mid" for i in range(6)), "song.it",
                                                                "other.xm"])
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
    monkeypatch.setattr(corpus, "SOUNDFONTS", tuple((f, f"usr/share/sounds/sf2/{f}.sf2") for f in FONTS))
    item = corpus.Item(corpus.Source(PKG, "music", (), render="midi"), Path("x"), midi[0]["file"])
    assert corpus.Renderer.settings(None, item) == midi[0]["rendered_with"]


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
    with pytest.raises(corpus.CorpusError, match="openmpt123 does not run here .*shared libraries.*--packages"):
        corpus.Renderer(tmp_path / "out", tmp_path / "debs", {"module"})


def test_the_real_sources_name_their_renderers():
    rendered = [s for s in corpus.SOURCES if s.render]
    assert {s.package for s in rendered} == {"openttd-openmsx", "kobodeluxe-data", "pingus-data"}
    assert all(s.render in corpus.TOOLS and s.role == "music" for s in rendered)
    assert {p for p, _ in corpus.SOUNDFONTS} == {"fluid-soundfont-gm", "musescore-general-soundfont-small"}
