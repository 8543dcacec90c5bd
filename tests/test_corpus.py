"""fplib.corpus and the build_corpus command, on a tiny fake Debian package built here with dpkg-deb (no network,
no apt-get): licences per copyright stanza, decoding and skipping, zip members, de-duplication of a sped-up copy,
the split, resumability, the rooms and the manifest readers."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from fplib import audio, corpus, corpus_dedupe, corpus_packages
from fplib.cli import build_corpus_main
from fplib.synth.music import synth_song
from fplib.synth.noise import NOISE_KINDS, synth_noise

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

PKG = "fake-music"
VERSION = "1.2-3"
MUSIC = "usr/share/fake-music/music"
NOISE = "usr/share/fake-music/ambience"
RIRS = "usr/share/fake-music/cabinets"
PK3 = "usr/share/fake-music/data/pak0.pk3"
SR = 16000  # the rate the fake package's files are written at (the corpus resamples to 8 kHz)

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake-music
Source: https://example.org/fake-music

Files: *
Copyright: 2020 Somebody
License: GPL-2+

Files: music/special*
Copyright: 2021 Someone Else
License: CC-BY-SA-4.0

License: GPL-2+
 This program is free software; you can redistribute it ...

License: CC-BY-SA-4.0
 Attribution-ShareAlike 4.0 International ...
"""

SOURCES = (
    corpus_packages.Source(PKG, "music", (f"{MUSIC}/*", f"{PK3}::music/*")),
    corpus_packages.Source(PKG, "noise", (f"{NOISE}/*",)),
    corpus_packages.Source(PKG, "rir", (f"{RIRS}/*.wav",)),
)


def _key(role: str, member: str) -> str:
    return f"{role}:{PKG}:{member}"


def _pick(prefix: str, want: str, ext: str = ".flac") -> str:
    """A file name ``prefix_N.EXT`` in MUSIC that :func:`corpus.split_of` puts in ``want``."""
    for i in range(1000):
        name = f"{prefix}_{i}{ext}"
        if corpus.split_of(f"{PKG}/{MUSIC}/{name}") == want:
            return name
    raise AssertionError("no name found")


def _make_package(root: Path) -> tuple[Path, dict]:
    """The fake package's folder tree, built into ``root/debs/fake-music_1.2-3_all.deb``; what it holds."""
    pkg = root / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: {PKG}\nVersion: {VERSION}\nArchitecture: all\nMaintainer: Test <test@example.org>\n"
        "Description: fake music for the corpus tests\n"
    )
    doc = pkg / "usr/share/doc" / PKG
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    music = pkg / MUSIC
    music.mkdir(parents=True)
    # the CC-BY-SA song is the one in the validation split
    names = {
        "special": _pick("special_theme", "val", ".ogg"),
        "train": _pick("train_song", "train"),
        "orig": "original.flac",
        "fast": "original_last_lap.flac",
    }
    songs = {
        "orig": synth_song(11, 38.0, SR)[0],
        "train": synth_song(13, 36.0, SR)[0],
        "special": synth_song(14, 35.0, SR)[0],
    }
    for k, wav in songs.items():
        audio.write(music / names[k], wav, SR)
    # the original played 1.05 x faster: fewer samples at the same rate (36.2 s, still a song)
    fast = soxr.resample(songs["orig"], SR * 1.05, SR).astype(np.float32)
    audio.write(music / names["fast"], fast, SR)
    rng = np.random.default_rng(0)
    (music / "corrupt.ogg").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    audio.write(music / "silent.wav", np.zeros(35 * SR, np.float32), SR)
    audio.write(music / "jingle.wav", synth_song(15, 5.0, SR)[0], SR)
    (music / "readme.txt").write_text("not audio")
    # a song inside a Quake-style archive, with a non-music member the glob leaves out
    (pkg / PK3).parent.mkdir(parents=True)
    zipped = root / "zipped.ogg"
    audio.write(zipped, synth_song(16, 35.0, SR)[0], SR)
    with zipfile.ZipFile(pkg / PK3, "w") as z:
        z.write(zipped, "music/zipped_song.ogg")
        z.write(zipped, "sound/effect.ogg")
    (pkg / NOISE).mkdir(parents=True)
    audio.write(pkg / NOISE / "wind.wav", synth_noise(NOISE_KINDS[0], 1, 4.0, 8000), 8000)
    audio.write(pkg / NOISE / "click.wav", synth_noise(NOISE_KINDS[0], 2, 0.5, 8000), 8000)
    (pkg / RIRS).mkdir(parents=True)
    ir = np.zeros(int(0.2 * SR), np.float32)
    ir[10] = 1.0
    ir[11:] = 0.3 * rng.standard_normal(ir.shape[0] - 11) * np.exp(-np.arange(ir.shape[0] - 11) / 300.0)
    audio.write(pkg / RIRS / "cabinet.wav", ir, SR, subtype="FLOAT")
    audio.write(pkg / RIRS / "too_long.wav", np.tile(ir, 20), SR, subtype="FLOAT")
    debs = root / "debs"
    debs.mkdir()
    r = subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(debs)], capture_output=True, text=True)
    if r.returncode != 0:  # older dpkg-deb without --root-owner-group
        r = subprocess.run(["dpkg-deb", "-b", str(pkg), str(debs)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return debs, {"names": names, "fast_samples": fast.shape[0]}


def _patch(mp) -> None:
    """The fake package as the only source, and few rooms and synthetic noises (fast)."""
    mp.setattr(corpus, "SOURCES", SOURCES)
    mp.setattr(corpus, "ROOMS", {"train": 2, "val": 1})
    mp.setattr(corpus, "SYNTHETIC_NOISES", {"train": 1, "val": 1})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The corpus of the fake package, built once (de-duplication with the shipped model, three rooms)."""
    root = tmp_path_factory.mktemp("corpus")
    debs, made = _make_package(root)
    out = root / "out"
    logged = []
    mp = pytest.MonkeyPatch()
    try:
        _patch(mp)
        manifest = corpus.build(out, debs, progress=False, log=logged.append)
    finally:
        mp.undo()
    return {"out": out, "debs": debs, "manifest": manifest, "log": logged, **made}


@pytest.fixture
def fake_sources(monkeypatch):
    _patch(monkeypatch)


def _files(built) -> dict[str, dict]:
    return {r["file"]: r for r in built["manifest"]["files"]}


def _music(built, key: str) -> dict:
    return _files(built)[f"{MUSIC}/{built['names'][key]}"]


@pytest.mark.slow
def test_fake_package_is_fetched_from_debs_and_versioned(built):
    deb = corpus_packages.fetch(PKG, built["debs"])  # found in the folder: apt-get is never run
    assert deb.name == f"{PKG}_{VERSION}_all.deb"
    assert corpus_packages.version_of(deb) == VERSION
    assert corpus_packages.version_of(Path("odd.deb")) == "unknown"
    assert corpus_packages.version_of(Path("x_1%3a2.0-1_all.deb")) == "1:2.0-1"


def test_manifest_written_with_kind_packages_versions(built):
    out, m = built["out"], built["manifest"]
    on_disk = corpus.storage.read_json(out / corpus.MANIFEST)
    assert on_disk == m
    assert m["kind"] == corpus.KIND
    assert m["sample_rate"] == audio.SR
    assert m["packages"] == {PKG: VERSION}
    assert all(r["version"] == VERSION and r["package"] == PKG for r in m["files"])
    keys = [r["key"] for r in m["files"]]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert "effect.ogg" not in " ".join(keys) and "readme" not in " ".join(keys)
    assert built["log"] and "duplicate" in built["log"][-1]  # the summary went to log


def test_kept_files_are_8k_mono_flac_with_their_hash(built):
    out = built["out"]
    kept = [r for r in built["manifest"]["files"] if r["status"] == "kept"]
    # four songs, the zipped one, one noise, one loudspeaker response
    assert sorted((r["role"], Path(r["path"]).name) for r in kept) == sorted(
        [("music", Path(built["names"][k]).with_suffix(".flac").name) for k in ("orig", "train", "special")]
        + [("music", "zipped_song.flac"), ("noise", "wind.flac"), ("rir", "cabinet.flac")]
    )
    for r in kept:
        path = out / r["path"]
        assert path.is_file()
        i = sf.info(str(path))
        assert (i.format, i.samplerate, i.channels, i.subtype) == ("FLAC", 8000, 1, "PCM_16")
        assert r["seconds"] == pytest.approx(i.frames / 8000, abs=1e-3)


def test_manifest_sha256_is_that_of_the_decoded_file(built):
    """The manifest's hash can be checked against the file: that of the kept file as decoded (every sample
    value, including those near half and full scale, must survive the 16-bit FLAC round trip)."""
    kept = [r for r in built["manifest"]["files"] if r["status"] in ("kept", "duplicate")]
    assert len(kept) == 7
    wrong = [
        r["file"]
        for r in kept
        if r["sha256"] != corpus.decoded_sha256(audio.load(built["out"] / r["path"], audio.SR, allow_silent=True))
    ]
    assert wrong == []


def test_decoded_sha256_is_of_16_bit_pcm():
    x = np.array([0.0, 0.5, -0.25, 1.0], np.float32)
    assert corpus.decoded_sha256(x) == corpus.decoded_sha256(x.astype(np.float64) + 1e-6)  # same 16-bit samples
    assert corpus.decoded_sha256(x) != corpus.decoded_sha256(x[::-1])
    assert corpus.decoded_sha256(np.array([2.0])) == corpus.decoded_sha256(np.array([1.5]))  # clipped


def test_licence_per_copyright_stanza(built):
    files = _files(built)
    assert _music(built, "special")["licence"] == "CC-BY-SA-4.0"
    others = [r for f, r in files.items() if "special" not in f]
    assert others and all(r["licence"] == "GPL-2+" for r in others)


def test_zip_member_decoded(built):
    r = _files(built)[f"{PK3}::music/zipped_song.ogg"]
    assert r["status"] == "kept" and r["seconds"] == pytest.approx(35.0, abs=0.05)
    assert (built["out"] / r["path"]).is_file()


def test_bad_silent_and_short_files_skipped_with_reasons(built):
    files = _files(built)
    bad = files[f"{MUSIC}/corrupt.ogg"]
    assert bad["status"] == "skipped" and "decod" in bad["reason"]
    silent = files[f"{MUSIC}/silent.wav"]
    assert silent["status"] == "skipped" and silent["reason"] == "silent"
    jingle = files[f"{MUSIC}/jingle.wav"]
    assert jingle["status"] == "skipped" and "too short for a song" in jingle["reason"]
    assert jingle["seconds"] == pytest.approx(5.0, abs=0.01)
    click = files[f"{NOISE}/click.wav"]
    assert click["status"] == "skipped" and "too short for a noise" in click["reason"]
    long_ir = files[f"{RIRS}/too_long.wav"]
    assert long_ir["status"] == "skipped" and "too long" in long_ir["reason"]
    for r in (bad, silent, jingle, click, long_ir):
        assert "path" not in r
    # the summary names the undecodable file, not the short ones
    text = corpus.summary(built["manifest"])
    assert "corrupt.ogg" in text and "jingle.wav" not in text and "2 of them too short" in text


def test_sped_up_copy_found_and_moved_out(built):
    out = built["out"]
    orig, fast = _music(built, "orig"), _music(built, "fast")
    assert fast["seconds"] < orig["seconds"] - 1.0
    assert fast["status"] == "duplicate"
    assert fast["duplicate_of"] == orig["key"] == _key("music", f"{MUSIC}/{built['names']['orig']}")
    assert 0.9 < fast["speed"] < 1.0  # the copy is played slower to find the original (1 / 1.05)
    assert fast["share"] >= corpus_dedupe.DUP_SHARE
    assert fast["path"].startswith("duplicates/") and (out / fast["path"]).is_file()
    names = {p.name for p in (out / "train").rglob("*.flac")} | {p.name for p in (out / "val").rglob("*.flac")}
    assert Path(built["names"]["fast"]).name not in names
    # nothing else is called a duplicate: different songs stay apart
    assert [r["file"] for r in built["manifest"]["files"] if r["status"] == "duplicate"] == [fast["file"]]
    assert corpus.storage.read_json(out / "duplicates.json")["found"].keys() == {fast["key"]}


def test_every_song_in_exactly_one_split(built):
    out = built["out"]
    songs = [r for r in built["manifest"]["files"] if r["role"] == "music" and r["status"] == "kept"]
    splits = {r["split"] for r in songs}
    assert splits == {"train", "val"}  # the names were picked so that both are used
    for r in songs:
        assert r["split"] == corpus.split_of(f"{PKG}/{r['file']}")
        assert Path(r["path"]).parts[:3] == (r["split"], "music", PKG)
        other = "val" if r["split"] == "train" else "train"
        assert not (out / other / "music" / PKG / Path(r["path"]).name).exists()
    assert _music(built, "special")["split"] == "val" and _music(built, "train")["split"] == "train"
    on_disk = sorted(
        p.relative_to(out).as_posix()
        for p in out.glob("*/music/**/*.flac")
        if p.relative_to(out).parts[0] in ("train", "val")
    )
    assert on_disk == sorted(r["path"] for r in songs)


def test_rooms_and_synthetic_noises(built):
    out, m = built["out"], built["manifest"]
    assert m["rooms"] == {"train": 2, "val": 1}
    for split, n in (("train", 2), ("val", 1)):
        rooms = sorted((out / split / "rooms").glob("*/room_*.flac"))
        assert len(rooms) == n
        for p in rooms:
            assert p.parent.name in ("plain", "speaker")
            ir = audio.load(p, audio.SR)
            assert np.abs(ir).max() == pytest.approx(1.0, abs=1e-3)
        assert len(list((out / split / "noise" / "synthetic").glob("*.flac"))) == 1
    rir = _files(built)[f"{RIRS}/cabinet.wav"]
    assert rir["split"] is None and rir["path"] == f"rir/{PKG}/cabinet.flac"


def test_rerun_resumes_without_decoding_again(built, fake_sources, monkeypatch):
    out = built["out"]
    lines = (out / corpus.RECORDS).read_text().splitlines()
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(corpus, "process", boom)
    monkeypatch.setattr(corpus, "duplicate_evidence", boom)  # the search is cached for the same tracks
    again = corpus.build(out, built["debs"], progress=False, log=lambda s: None)
    assert again == built["manifest"]
    assert (out / corpus.RECORDS).read_text().splitlines() == lines
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")} == stamp


def test_interrupted_build_decodes_only_what_is_missing(built, fake_sources, tmp_path, monkeypatch):
    """A records log without its last lines (interrupted before those files were written): only those
    files are decoded again, and the log ends up complete."""
    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    lines = (out / corpus.RECORDS).read_text().splitlines(keepends=True)
    dropped = [json.loads(x) for x in lines[-3:]]
    for r in dropped:
        if "path" in r:
            (out / r["path"]).unlink()
    (out / corpus.RECORDS).write_text("".join(lines[:-3]))
    seen = []
    real = corpus.process
    monkeypatch.setattr(corpus, "process", lambda item, *a, **k: seen.append(item.key) or real(item, *a, **k))
    m = corpus.build(out, built["debs"], progress=False, log=lambda s: None)
    assert sorted(seen) == sorted(r["key"] for r in dropped)
    assert sorted((out / corpus.RECORDS).read_text().splitlines()) == sorted(x.rstrip("\n") for x in lines)
    assert m == built["manifest"]


def test_find_manifest_and_manifest_songs(built, tmp_path):
    out = built["out"]
    orig = _music(built, "orig")
    m = corpus.find_manifest(out / orig["path"])
    assert m is not None and m.resolve() == (out / corpus.MANIFEST).resolve()
    assert corpus.find_manifest(out / "train") == m
    assert corpus.find_manifest(tmp_path) is None
    (tmp_path / corpus.MANIFEST).write_text('{"kind": "something else"}')
    assert corpus.find_manifest(tmp_path / "x.flac") is None
    paths, hashes = corpus.manifest_songs(m)
    songs = [r for r in built["manifest"]["files"] if r["role"] == "music" and r["status"] in ("kept", "duplicate")]
    assert len(songs) == 5  # four songs and the copy
    assert paths == {str((out / r["path"]).resolve()) for r in songs}
    assert str((out / orig["path"]).resolve()) in paths
    assert str((out / _music(built, "fast")["path"]).resolve()) in paths  # duplicates too
    assert hashes == {r["sha256"] for r in songs}
    noise = _files(built)[f"{NOISE}/wind.wav"]
    assert str((out / noise["path"]).resolve()) not in paths


def test_split_of_deterministic_and_share():
    keys = [f"pkg-{i % 7}/usr/share/x/track_{i}.ogg" for i in range(2000)]
    first = [corpus.split_of(k) for k in keys]
    assert first == [corpus.split_of(k) for k in keys]
    assert set(first) == {"train", "val"}
    share = first.count("val") / len(keys)
    assert abs(share - corpus.VAL_SHARE) < 0.04
    assert abs([corpus.split_of(k, 0.5) for k in keys].count("val") / len(keys) - 0.5) < 0.05
    assert all(corpus.split_of(k, 0.0) == "train" for k in keys[:200])
    assert all(corpus.split_of(k, 1.0) == "val" for k in keys[:200])


def test_licences_parses_stanzas():
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: x\nLicense: GPL-2+\n\n"
        "Files: data/music/*\n  data/sounds/loop_*.ogg\nCopyright: y\nLicense: CC-BY-3.0\n\n"
        "License: GPL-2+\n text of it\n\n"
        "Files: debian/*\nLicense: GPL-3+\n"
    )
    stanzas = corpus_packages.licences(text)
    assert stanzas == [
        (["*"], "GPL-2+"),
        (["data/music/*", "data/sounds/loop_*.ogg"], "CC-BY-3.0"),
        (["debian/*"], "GPL-3+"),
    ]
    assert corpus_packages.licences("no stanzas here") == []
    # installed paths differ from the source's: the pattern's tail is matched against the path's tail
    assert corpus_packages.licence_for("usr/share/games/x/data/music/a.ogg", stanzas, "?") == "CC-BY-3.0"
    assert corpus_packages.licence_for("usr/share/games/x/data/sounds/loop_2.ogg", stanzas, "?") == "CC-BY-3.0"
    assert corpus_packages.licence_for("usr/share/games/x/data/sounds/hit.ogg", stanzas, "?") == "GPL-2+"
    assert corpus_packages.licence_for("x.pk3::music/a.ogg", stanzas, "?") == "GPL-2+"
    assert corpus_packages.licence_for("usr/share/x/music/a.ogg", [(["sounds/*"], "MIT")], "fallback") == "fallback"
    assert corpus_packages.licence_for("a/music/b.ogg", [(["music/*"], "MIT"), (["music/b.ogg"], "BSD")], "?") == "BSD"


def test_package_licence(tmp_path):
    doc = tmp_path / "usr/share/doc/p"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    stanzas, fallback = corpus_packages.package_licence(tmp_path, "p")
    assert [lic for _, lic in stanzas] == ["GPL-2+", "CC-BY-SA-4.0"]
    assert fallback == "CC-BY-SA-4.0 / GPL-2+"
    stanzas, fallback = corpus_packages.package_licence(tmp_path, "missing")
    assert stanzas == [] and "copyright" in fallback


def test_items_globs_and_excludes(built):
    root = built["out"] / "unpacked" / PKG
    assert (root / ".complete").read_text().strip() == f"{PKG}_{VERSION}_all.deb"
    music = corpus_packages.items(SOURCES[0], root)
    members = [i.member for i in music]
    assert f"{PK3}::music/zipped_song.ogg" in members and f"{PK3}::sound/effect.ogg" not in members
    assert f"{MUSIC}/readme.txt" not in members
    fewer = corpus_packages.items(corpus_packages.Source(PKG, "music", SOURCES[0].include, ("*.wav", "*::*")), root)
    assert {i.member for i in fewer} == {m for m in members if not m.endswith(".wav") and "::" not in m}


def test_real_sources_are_well_formed():
    assert corpus.packages() == sorted({s.package for s in corpus.SOURCES})
    for s in corpus.SOURCES:
        assert s.role in corpus.ROLES and (s.include or s.render == "music21")  # music21's works: music21_works
    # the real-music benchmark's packages are never training data
    for held_out in ("supertux-data", "hedgewars-data", "colobot-common-sounds", "megaglest-data"):
        assert held_out not in corpus.packages()


def test_cli_lists_packages(capsys):
    assert build_corpus_main(["--list"]) == 0
    printed = capsys.readouterr().out
    for p in corpus.packages():
        assert p in printed
    assert "rir" in printed and "music" in printed


def test_cli_unknown_package_is_an_error(tmp_path, capsys):
    code = build_corpus_main(
        ["-o", str(tmp_path / "c"), "--debs", str(tmp_path / "debs"), "--packages", "no-such-package", "--no_progress"]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "no-such-package" in err and "not a corpus package" in err
    assert not (tmp_path / "debs").exists()  # nothing was fetched
    assert build_corpus_main(["--no-such-option"]) == 2


def test_cli_builds_from_local_debs(built, fake_sources, tmp_path, monkeypatch, capsys):
    """The command with --no_dedupe on the fake package: exit 0, manifest written (music only: plain rooms,
    with no loudspeaker response to hear them through)."""
    monkeypatch.setattr(corpus, "SOURCES", SOURCES[:1])
    out = tmp_path / "c"
    assert build_corpus_main(["-o", str(out), "--debs", str(built["debs"]), "--no_dedupe", "--no_progress"]) == 0
    m = corpus.storage.read_json(out / corpus.MANIFEST)
    assert m["packages"] == {PKG: VERSION} and m["rooms"] == {"train": 2, "val": 1}
    assert not list((out / "train" / "rooms").glob("speaker/*.flac"))
    assert _files({"manifest": m})[f"{MUSIC}/original_last_lap.flac"]["status"] == "kept"  # no de-duplication
    assert "file(s) skipped" in capsys.readouterr().out


def test_missing_deb_without_apt_is_a_corpus_error(tmp_path, monkeypatch):
    """fetch: a package that is not in the folder and that apt-get cannot download is a CorpusError naming it."""
    monkeypatch.setattr(
        corpus_packages.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 100, "", "E: no")
    )
    with pytest.raises(corpus_packages.CorpusError, match="apt-get download fake-music failed"):
        corpus_packages.fetch(PKG, tmp_path / "debs")


def test_unpack_refuses_a_broken_deb(tmp_path):
    bad = tmp_path / "x_1_all.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(corpus_packages.CorpusError, match="dpkg-deb -x failed"):
        corpus_packages.unpack(bad, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()
