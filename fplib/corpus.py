"""The real training corpus: openly licensed recorded music, ambience and responses from Debian packages.

``build_corpus`` (``make corpus``) fetches the packages of :data:`SOURCES` with ``apt-get download``,
unpacks them with ``dpkg-deb -x`` (nothing is installed), decodes every file they ship that a source
names (also inside zip archives such as 0 A.D.'s ``public.zip`` and the Quake-style ``.pk3`` files),
down-mixes and resamples it to the model's rate and writes it as 16-bit FLAC::

    CORPUS/train/music/PACKAGE/...   CORPUS/val/music/PACKAGE/...   music, split by song
    CORPUS/train/noise/PACKAGE/...   CORPUS/val/noise/PACKAGE/...   recorded ambience, split by file
    CORPUS/rir/PACKAGE/...                                           loudspeaker (cabinet) responses
    CORPUS/{train,val}/rooms/{plain,speaker}/                        simulated rooms (pyroomacoustics), half
                                                                     of them heard through a loudspeaker
    CORPUS/{train,val}/noise/synthetic/                              synthetic noises (fplib.synth) beside
                                                                     the recorded ones
    CORPUS/manifest.json                                             every file: package, version, member,
                                                                     sha256 of the decoded audio, seconds,
                                                                     licence, split, status

Music is de-duplicated: several packages ship the same track twice, a loop of it, or a copy played
faster (a "last lap" version). Every track is fingerprinted with the shipped fplib-small-v1 at a grid of
playback speeds; a track whose excerpts are found in a longer track is recorded as its duplicate and
left out. The split is by song, decided from a hash of the package and the file's path (so it does not
move when packages are added). Audio never goes into git: the corpus lives under ``outputs/``.

The job is resumable: each decoded file is logged (``records.jsonl``) as soon as it is written, and a
rerun skips what is logged. Files that cannot be decoded are logged with the reason and reported.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from fplib import audio, storage

ROLES = ("music", "noise", "rir")
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
KIND = "fplib-corpus"
# music shorter than this is a jingle or an effect, not a song
MIN_MUSIC_S = 30.0
MIN_NOISE_S = 2.0
MAX_RIR_S = 2.0
VAL_SHARE = 0.12  # share of songs (and noise files) held out: validation and calibration negatives


@dataclass(frozen=True)
class Source:
    """Files of one Debian package used in one role. ``include``: globs relative to the unpacked
    package; ``ARCHIVE::GLOB`` names members of a zip archive (``.zip``, ``.pk3``) inside it.
    ``render``: the files are not audio files: ``"midi"`` scores (rendered by FluidSynth through one of the
    :data:`SOUNDFONTS`), ``"module"`` (tracker modules, rendered by libopenmpt's ``openmpt123``) or
    ``"soundfont"`` (the recorded samples a SoundFont holds, read by :func:`soundfont_samples`) or
    ``"music21"`` (works of the corpus the ``music21`` package ships, not a Debian package:
    :func:`music21_works`, rendered in :data:`SCORE_VERSIONS` instrumentations by :class:`Renderer`)."""

    package: str
    role: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    render: str | None = None


G = "usr/share/games"
# Only these packages (Debian main) may be used for training. The real-music benchmark's packages
# (supertux-data, hedgewars-data, colobot-common-sounds, megaglest-data) are never among them.
SOURCES: tuple[Source, ...] = (
    Source("0ad-data", "music", (f"{G}/0ad/mods/public/public.zip::audio/music/*",)),
    Source("supertuxkart-data", "music", (f"{G}/supertuxkart/data/music/*",)),
    Source("ufoai-music", "music", (f"{G}/ufoai/base/*.pk3::music/*",)),
    Source("naev-data", "music", ("usr/share/naev/dat/snd/music/*",)),
    Source("nexuiz-music", "music", (f"{G}/nexuiz/data/*.pk3::sound/cdtracks/*",)),
    Source("planetblupi-music-ogg", "music", ("usr/share/planetblupi/music/*",)),
    Source("freedroidrpg-data", "music", ("usr/share/freedroidrpg/data/sound/music/*",)),
    Source("redeclipse-data", "music", (f"{G}/redeclipse/data/maps/*",)),
    Source("warmux-data", "music", (f"{G}/warmux/music/**/*",)),
    Source("hyperrogue-music", "music", ("usr/share/hyperrogue/music/*",)),
    Source("frozen-bubble-data", "music", (f"{G}/frozen-bubble/snd/*",)),
    Source("xmoto-data", "music", (f"{G}/xmoto/Textures/Musics/*",)),
    Source("neverball-common", "music", (f"{G}/neverball/bgm/*",)),
    Source("openarena-088-data", "music", (f"{G}/openarena/baseoa/*.pk3::music/*",)),
    Source("alienblaster-data", "music", (f"{G}/alienblaster/sound/*",)),
    Source("triplea", "music", (f"{G}/triplea/assets/sounds/**/*",)),
    Source("openttd-openmsx", "music", (f"{G}/openttd/baseset/openmsx/*",), render="midi"),
    Source("kobodeluxe-data", "music", ("usr/share/kobo-deluxe/sfx/*",), render="midi"),
    Source("pingus-data", "music", (f"{G}/pingus/data/music/*",), render="module"),
    Source("music21", "music", (), render="music21"),
    Source("0ad-data", "noise", (f"{G}/0ad/mods/public/public.zip::audio/ambient/**",)),
    Source("redeclipse-data", "noise", (f"{G}/redeclipse/data/sounds/ambience/**/*",)),
    # Calf Vinyl's recorded record noises (crackle, crinkle, hum, motor, rumble, static, hiss) are SoundFonts
    Source("calf-plugins", "noise", ("usr/share/calf/sf2/*.sf2",), render="soundfont"),
    Source("guitarix-common", "rir", ("usr/share/gx_head/sounds/**/*.wav",)),
)


class CorpusError(RuntimeError):
    """The corpus cannot be built (a package cannot be fetched or unpacked)."""


def packages(sources: tuple[Source, ...] = SOURCES) -> list[str]:
    return sorted({s.package for s in sources})


def split_of(key: str, val_share: float = VAL_SHARE) -> str:
    """``"train"`` or ``"val"`` from a hash of ``key`` (package and path): stable when sources change."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2**64
    return "val" if h < val_share else "train"


def decoded_sha256(wav: np.ndarray) -> str:
    """SHA-256 of decoded audio as 16-bit PCM (what the manifest records and the leakage check compares; the
    scale is libsndfile's, 32768, so that a 16-bit file written from it decodes to the same hash)."""
    pcm = np.clip(np.round(np.asarray(wav, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


# -- fetching and unpacking ---------------------------------------------------------------------------


def fetch(package: str, debs: Path) -> Path:
    """The package's ``.deb`` in ``debs`` (downloaded with ``apt-get download`` if not there)."""
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        got = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if r.returncode != 0 or not got:
            raise CorpusError(f"apt-get download {package} failed (run `apt-get update` once first; "
                              f"on a machine without Debian's apt, copy {package}_*.deb into {debs}): "
                              f"{r.stderr.strip()[-300:]}")
        os.replace(got[0], debs / got[0].name)
    return debs / got[0].name


def unpack(deb: Path, target: Path) -> Path:
    """``dpkg-deb -x`` into ``target`` (once: a ``.complete`` marker names the unpacked ``.deb``)."""
    marker = target / ".complete"
    if marker.exists() and marker.read_text().strip() == deb.name:
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    r = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CorpusError(f"{deb}: dpkg-deb -x failed: {r.stderr.strip()[-300:]}")
    (tmp / ".complete").write_text(deb.name + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def version_of(deb: Path) -> str:
    """The package version named in a ``.deb`` file name (``name_version_arch.deb``)."""
    parts = deb.name[: -len(".deb")].split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "unknown"


# -- licences ------------------------------------------------------------------------------------------


def licences(copyright_text: str) -> list[tuple[list[str], str]]:
    """``(file patterns, licence)`` of each ``Files:`` stanza of a machine-readable Debian copyright
    file, in order (later stanzas win, as in the format's rules)."""
    out = []
    for stanza in re.split(r"\n\s*\n", copyright_text):
        files = re.search(r"^Files:\s*(.+(?:\n[ \t]+.+)*)", stanza, re.M)
        lic = re.search(r"^License:\s*(.+)$", stanza, re.M)
        if files and lic:
            out.append((files.group(1).split(), lic.group(1).strip()))
    return out


def licence_for(member: str, stanzas: list[tuple[list[str], str]], fallback: str) -> str:
    """The licence of the stanza whose pattern matches ``member`` (its path in the package or archive):
    the pattern's tail is compared with the path's tail, since source and installed paths differ."""
    found = None
    parts = member.split("/")
    for patterns, lic in stanzas:
        for pat in patterns:
            pp = pat.strip("/").split("/")
            if pat == "*":
                found = found or lic
                continue
            n = len(pp)
            if any(fnmatch.fnmatch("/".join(parts[i : i + n]), "/".join(pp)) for i in range(len(parts) - n + 1)):
                found = lic
    return found or fallback


def package_licence(root: Path, package: str) -> tuple[list[tuple[list[str], str]], str]:
    path = root / "usr/share/doc" / package / "copyright"
    text = path.read_text(errors="replace") if path.exists() else ""
    stanzas = licences(text)
    names = sorted({lic for _, lic in stanzas}) or sorted(set(re.findall(r"^License: (.+)$", text, re.M)))
    if not names:  # a copyright file in prose (not machine-readable): the GPL notice it quotes
        flat = " ".join(text.split())
        for version in ("2", "3"):
            if re.search(rf"GNU General Public License.{{0,200}}version {version}\b.{{0,80}}any later version", flat):
                names = [f"GPL-{version}+"]
                break
        if not names and re.search(r"\bMIT licen[cs]e|\(MIT\b|Permission is hereby granted, free of charge", flat):
            names = ["MIT"]
    return stanzas, (" / ".join(names) if names else "see the package's copyright file")


# -- enumerating files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    source: Source
    path: Path  # the file, or the archive holding it
    member: str  # the path inside the package (and archive: "ARCHIVE::MEMBER")
    in_archive: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source.role}:{self.source.package}:{self.member}"


def items(source: Source, root: Path) -> list[Item]:
    """The audio files of ``source`` in the unpacked package ``root``, sorted."""
    out = []
    for inc in source.include:
        glob, _, member_glob = inc.partition("::")
        for path in sorted(root.glob(glob)):
            rel = str(path.relative_to(root))
            if member_glob:
                with zipfile.ZipFile(path) as z:
                    for m in sorted(z.namelist()):
                        if _is_audio(m, source.render) and fnmatch.fnmatch(m, member_glob):
                            out.append(Item(source, path, f"{rel}::{m}", m))
            elif path.is_file() and _is_audio(rel, source.render):
                out.append(Item(source, path, rel))
    return [i for i in out if not any(fnmatch.fnmatch(i.member, e) for e in source.exclude)]


def _is_audio(name: str, render: str | None = None) -> bool:
    return Path(name).suffix.lower() in (RENDERED[render] if render else audio.AUDIO_EXTENSIONS)


def _decode(item: Item, sr: int, renderer: Renderer | None = None) -> np.ndarray:
    if item.source.render:
        if renderer is None:
            raise CorpusError(f"{item.member}: a {item.source.render} file needs a Renderer")
        return renderer.render(item, sr)
    if item.in_archive is None:
        return audio.load(item.path, sr, allow_silent=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return audio.load(_extracted(item, Path(tmp)), sr, allow_silent=True)
        except audio.AudioError as e:
            raise audio.AudioError(item.member, e.reason) from None


def _extracted(item: Item, folder: Path) -> Path:
    """``item``'s file copied into ``folder`` under its own name (out of its zip archive if it is in one)."""
    dest = folder / Path(item.member.split("::")[-1]).name
    if item.in_archive is None:
        shutil.copyfile(item.path, dest)
    else:
        with zipfile.ZipFile(item.path) as z, z.open(item.in_archive) as src, open(dest, "wb") as f:
            shutil.copyfileobj(src, f)
    return dest


def _target(out: Path, item: Item, split: str | None, clash: bool = False) -> Path:
    """Where ``item`` goes; ``clash``: another file of its package has the same name (both get a suffix
    from their paths, decided from the package's file list, never from what is on disk)."""
    name = item.member.split("::")[-1]
    if item.source.render == "music21":  # "composer/work.mxl#vK": the composer in the name (versions clash)
        name = name.replace("/", "_").replace(VERSION_SEP, "_v")
    name = Path(name)
    stem = f"{name.stem}-{hashlib.sha256(item.member.encode()).hexdigest()[:8]}" if clash else name.stem
    rel = Path(item.source.package) / f"{stem}.flac"
    if item.source.role == "rir":
        return out / "rir" / rel
    return out / split / item.source.role / rel


def process(item: Item, out: Path, sr: int, version: str, licence: str, clash: bool = False,
            renderer: Renderer | None = None) -> dict:
    """Decode (or render) one file and write it into the corpus; the record the manifest keeps of it."""
    role = item.source.role
    split = None if role == "rir" else split_of(f"{item.source.package}/{item.member.split(VERSION_SEP)[0]}")
    rec = {"key": item.key, "package": item.source.package, "version": version, "file": item.member,
           "role": role, "split": split, "licence": licence}
    if item.source.render and renderer is not None:
        how = renderer.settings(item)
        rec.update(rendered_with=how, licence=f"{licence}; rendered through {renderer.instrument_licence(how)}")
    try:
        wav = _decode(item, sr, renderer)
    except audio.AudioError as e:
        return {**rec, "status": "skipped", "reason": e.reason}
    seconds = wav.shape[0] / sr
    reason = None
    if audio.peak_dbfs(wav) < audio.SILENCE_DBFS:
        reason = "silent"
    elif role == "music" and seconds < MIN_MUSIC_S:
        reason = f"too short for a song: {seconds:.1f} s (at least {MIN_MUSIC_S:.0f} s)"
    elif role == "noise" and seconds < MIN_NOISE_S:
        reason = f"too short for a noise: {seconds:.1f} s (at least {MIN_NOISE_S:.0f} s)"
    elif role == "rir" and seconds > MAX_RIR_S:
        reason = f"too long for an impulse response: {seconds:.1f} s"
    if reason:
        return {**rec, "status": "skipped", "reason": reason, "seconds": round(seconds, 3)}
    if role != "rir":
        wav = wav / max(1.0, float(np.abs(wav).max()))
    target = _target(out, item, split, clash)
    target.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(wav * 32768.0), -32768, 32767) / 32768.0  # exactly what 16-bit FLAC holds
    audio.write(target, pcm.astype(np.float32), sr, subtype="PCM_16")
    return {**rec, "status": "kept", "path": str(target.relative_to(out)), "seconds": round(seconds, 3),
            "sha256": decoded_sha256(pcm)}


# -- rendering scores -----------------------------------------------------------------------------------

RENDERED = {"midi": (".mid", ".midi"), "module": (".it", ".s3m", ".xm", ".mod"), "soundfont": (".sf2",)}
# music21's corpus: its licence notice says some encodings are for non-commercial use only and that each work's
# own licence governs. A work is used only when its own metadata states an open licence (public domain, CC0,
# CC BY, CC BY-SA), recorded per work; works with no stated licence, or a restrictive one, are left out.
OPEN_LICENCE = re.compile(r"public domain|\bcc0\b|\bcc-(?:sa-)?by\b|creative commons|\bp\.\s?d\.", re.I)
CLOSED_LICENCE = re.compile(r"non-?commercial|\bnc\b|all rights reserved", re.I)
SCORE_VERSIONS = 3  # each work rendered in this many instrumentations and tempi (all in the work's split)
VERSION_SEP = "#v"  # MEMBER#vK: version K of a work
GM_MELODIC = 96  # General MIDI programs 0-95 (pianos to synth pads; no effects or percussion kits)
# instruments for MIDI: (package, soundfont in it); each song is rendered through one, chosen from its key
SOUNDFONTS = (("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2"),
              ("musescore-general-soundfont-small", "usr/share/sounds/sf3/MuseScore_General_Lite.sf3"))
# the renderers, run from their unpacked Debian packages (nothing is installed): binary, its package, and the
# packages whose libraries it loads on a bare Debian 12 (used where apt cannot tell: see tool_packages); an
# installed binary on PATH is used instead when there is one
_SNDFILE = ("libsndfile1", "libflac12", "libogg0", "libvorbis0a", "libvorbisenc2", "libopus0", "libmpg123-0",
            "libmp3lame0", "libpulse0", "libasyncns0", "libjack-jackd2-0", "libsamplerate0")
TOOLS = {
    "midi": ("usr/bin/fluidsynth", ("fluidsynth", "libfluidsynth3", "libinstpatch-1.0-2", "libsdl2-2.0-0",
                                    "libdecor-0-0", "libwayland-cursor0", "libwayland-egl1", *_SNDFILE)),
    "module": ("usr/bin/openmpt123", ("openmpt123", "libopenmpt0", "libportaudio2", "libvorbisfile3", *_SNDFILE)),
}


def tool_packages(package: str, fallback: tuple[str, ...]) -> list[str]:
    """``package`` and the packages it needs that this machine lacks, as apt resolves them (``apt-get install
    --simulate``: nothing is installed); ``fallback`` where apt cannot say (no apt, or an unknown package)."""
    try:
        r = subprocess.run(["apt-get", "install", "--simulate", "--no-install-recommends", package],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return list(fallback)
    if r.returncode != 0:
        return list(fallback)
    needed = simulated_installs(r.stdout)
    return [package, *(p for p in needed if p != package)]


def simulated_installs(text: str) -> list[str]:
    """The packages an ``apt-get install --simulate`` would install (its ``Inst NAME ...`` lines), in order."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("Inst ") and len(line.split()) > 1]


RENDER_SR = 22050  # rendered at this rate, then resampled to the corpus's
MAX_RENDER_S = 600  # modules that loop are cut here
LOOP_TO_S = 12.0  # a SoundFont's noise samples are loops: repeated to this length


def music21_works() -> list[tuple[str, str]]:
    """``(path in music21's corpus, licence)`` of the works of the corpus that the ``music21`` package ships
    whose own metadata states an open licence (:data:`OPEN_LICENCE`, and none of :data:`CLOSED_LICENCE`)."""
    from music21 import corpus as m21corpus

    works = []
    # the works that state a copyright at all (a search: iterating the whole bundle is quadratic in music21 10)
    for entry in m21corpus.corpora.CoreCorpus().metadataBundle.search(".", field="copyright"):
        stated = " ".join(str(getattr(entry.metadata, "copyright", None) or "").split())
        if OPEN_LICENCE.search(stated) and not CLOSED_LICENCE.search(stated):
            works.append((str(entry.sourcePath), stated))
    return sorted(set(works))


def music21_items(source: Source) -> tuple[list[Item], dict[str, str]]:
    """The items of the ``music21`` source (each open-licensed work, :data:`SCORE_VERSIONS` times) and
    each item's licence as the work states it."""
    from music21 import common

    root = Path(common.getCorpusFilePath())
    found, licence_of = [], {}
    for rel, stated in music21_works():
        for k in range(SCORE_VERSIONS):
            member = f"{rel}{VERSION_SEP}{k}"
            found.append(Item(source, root / rel, member))
            licence_of[member] = stated
    return found, licence_of


def music21_midi(path: Path, how: dict, dest: Path) -> Path:
    """A music21 score written as MIDI to ``dest`` with the instrumentation, loudness and tempo of ``how``
    (:meth:`Renderer.settings`): part ``i`` plays General MIDI program ``programs[i]`` at velocity
    ``velocities[i]`` (both cycled), at ``tempo`` times the score's own."""
    import warnings

    from music21 import converter, instrument, midi

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # music21 warns about every odd measure of an encoding
            score = converter.parse(str(path))
    except Exception as e:  # music21 raises many kinds on a score it cannot read
        raise audio.AudioError(path, f"music21 cannot read it ({type(e).__name__}: {e})") from None
    parts = list(score.parts) or [score]
    for i, part in enumerate(parts):
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            old.activeSite.remove(old)
        inst = instrument.Instrument()
        inst.midiProgram = how["programs"][i % len(how["programs"])]
        part.insert(0, inst)
        velocity = how["velocities"][i % len(how["velocities"])]
        for n in part.recurse().notes:
            n.volume.velocity = velocity
    mf = midi.translate.streamToMidiFile(score)
    tempos = [e for t in mf.tracks for e in t.events if e.type == midi.MetaEvents.SET_TEMPO]
    if not tempos and mf.tracks:  # a score without a metronome mark plays at MIDI's default, a quarter = 120
        first = midi.MidiEvent(mf.tracks[0], type=midi.MetaEvents.SET_TEMPO)
        first.data = (500_000).to_bytes(3, "big")
        mf.tracks[0].events[0:0] = [midi.DeltaTime(mf.tracks[0], time=0), first]
        tempos = [first]
    for e in tempos:  # microseconds per quarter note, 3 bytes
        e.data = min(0xFFFFFF, round(int.from_bytes(e.data, "big") / how["tempo"])).to_bytes(3, "big")
    for track in mf.tracks:  # every channel silenced at the end: a note left on would ring for ever (FluidSynth
        channels = sorted({e.channel for e in track.events if e.isNoteOn()})  # renders until no voice sounds)
        if channels and track.events and track.events[-1].type == midi.MetaEvents.END_OF_TRACK:
            end = track.events.pop()
            for channel in channels:
                for controller in (123, 120):  # all notes off, all sound off
                    cc = midi.MidiEvent(track, type=midi.ChannelVoiceMessages.CONTROLLER_CHANGE, channel=channel)
                    cc.parameter1, cc.parameter2 = controller, 0
                    track.events += [cc, midi.DeltaTime(track, time=0)]
            track.events.append(end)
    mf.open(str(dest), "wb")
    try:
        mf.write()
    finally:
        mf.close()
    return dest


def _riff_chunks(data: bytes, start: int, end: int):
    """``(id, offset of the data, size)`` of the RIFF chunks in ``data[start:end]``."""
    import struct

    while start + 8 <= end:
        cid, size = struct.unpack_from("<4sI", data, start)
        yield cid, start + 8, min(size, end - start - 8)
        start += 8 + size + (size & 1)


def soundfont_samples(path: str | os.PathLike) -> list[tuple[str, np.ndarray, int]]:
    """The samples of a SoundFont 2 file (``.sf2``): ``(name, mono float32 audio, sample rate)`` each, a stereo
    pair (left and right samples linked, as the format's ``shdr`` records them) down-mixed to one.
    :class:`fplib.audio.AudioError` if the file is not a SoundFont 2 with 16-bit samples."""
    import struct

    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise audio.AudioError(path, "not a SoundFont 2 file (no RIFF sfbk header)")
    smpl = shdr = None
    for cid, off, size in _riff_chunks(data, 12, len(data)):
        if cid == b"LIST":
            for cid2, off2, size2 in _riff_chunks(data, off + 4, off + size):
                if cid2 == b"smpl":
                    smpl = np.frombuffer(data, "<i2", size2 // 2, off2).astype(np.float32) / 32768.0
                elif cid2 == b"shdr":
                    shdr = (off2, size2)
    if smpl is None or shdr is None:
        raise audio.AudioError(path, "a SoundFont without 16-bit samples (no smpl or shdr chunk)")
    headers = []
    for i in range(shdr[1] // 46 - 1):  # the last header is the terminal "EOS" record
        name, begin, end, _, _, rate, _, _, link, kind = struct.unpack_from("<20sIIIIIBbHH", data, shdr[0] + 46 * i)
        headers.append((name.split(b"\0")[0].decode("latin-1"), begin, min(end, smpl.size), rate, link, kind))
    out, used = [], set()
    for i, (name, begin, end, rate, link, kind) in enumerate(headers):
        if i in used or end <= begin or kind & 0x8000:  # ROM samples hold no data
            continue
        wav = smpl[begin:end]
        if kind & 4 and link < len(headers) and headers[link][3] == rate:  # a left sample linked to its right
            _, b2, e2, *_ = headers[link]
            n = min(end - begin, e2 - b2)
            wav = (smpl[begin : begin + n] + smpl[b2 : b2 + n]) / 2
            used.add(link)
            name = name[:-1] if name.endswith("L") else name
        out.append((name, wav, rate))
    return out


class Renderer:
    """Renders the scores of ``render`` sources to audio with Debian's FluidSynth and openmpt123.

    Each MIDI file is rendered through one of :data:`SOUNDFONTS`, with a gain and FluidSynth's reverb and
    chorus on or off, all drawn from a hash of the file's key (the same every run: :meth:`settings`, which
    the manifest records); modules bring their own samples and are rendered once, without repeats."""

    def __init__(self, out: Path, debs: Path, kinds: set[str]):
        self.unpacked = out / "unpacked"
        self.tools: dict[str, list[str]] = {}
        self.env = dict(os.environ)
        libs: list[str] = []
        kinds = {"midi" if k == "music21" else k for k in kinds}
        for kind in sorted(kinds & set(TOOLS)):
            binary, pkgs = TOOLS[kind]
            name = Path(binary).name
            if shutil.which(name):
                self.tools[kind] = [shutil.which(name)]
                continue
            roots = [unpack(fetch(p, debs), self.unpacked / p) for p in tool_packages(pkgs[0], pkgs)]
            libs += sorted({str(so.parent) for r in roots for so in r.rglob("*.so*")})
            self.tools[kind] = [str(roots[0] / binary)]
        if libs:
            self.env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, os.environ.get("LD_LIBRARY_PATH", "")])
        self.soundfonts: list[tuple[str, Path, str]] = []
        if "midi" in kinds:
            for pkg, sf in SOUNDFONTS:
                root = unpack(fetch(pkg, debs), self.unpacked / pkg)
                self.soundfonts.append((pkg, root / sf, package_licence(root, pkg)[1]))
        for cmd in self.tools.values():
            r = subprocess.run([*cmd, "--version"], capture_output=True, text=True, env=self.env)
            if r.returncode != 0:
                raise CorpusError(f"{cmd[0]} does not run here ({(r.stderr or r.stdout).strip()[-300:]}); install "
                                  f"it, or leave out the packages that need it (--packages)")

    def settings(self, item: Item) -> dict:
        """How ``item`` is rendered, drawn from its key."""
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(item.key.encode()).digest()[:8], "little"))
        if item.source.render == "module":
            return {"tool": "openmpt123", "gain_db": round(float(rng.uniform(-6.0, 0.0)), 1)}
        if item.source.render == "soundfont":
            return {"tool": "soundfont samples", "looped_to_s": LOOP_TO_S}
        sf = int(rng.integers(len(SOUNDFONTS)))
        how = {"tool": "fluidsynth", "soundfont": SOUNDFONTS[sf][0], "gain": round(float(rng.uniform(0.2, 0.45)), 2),
               "reverb": bool(rng.random() < 0.5), "chorus": bool(rng.random() < 0.5)}
        if item.source.render == "music21":
            how.update(tool="music21 + fluidsynth", tempo=round(float(rng.uniform(0.8, 1.25)), 2),
                       programs=[int(p) for p in rng.integers(0, GM_MELODIC, 8)],
                       velocities=[int(v) for v in rng.integers(60, 120, 8)])
        return how

    def instrument_licence(self, how: dict) -> str:
        if how["tool"] == "openmpt123":
            return "the module's own samples (openmpt123)"
        if how["tool"] == "soundfont samples":
            return "its own samples, looped"
        lic = next(lic for pkg, _, lic in self.soundfonts if pkg == how["soundfont"])
        return f"{how['soundfont']} ({lic}), FluidSynth"

    def render(self, item: Item, sr: int) -> np.ndarray:
        """``item`` rendered and resampled to ``sr``, mono; :class:`fplib.audio.AudioError` if it cannot be."""
        how = self.settings(item)
        with tempfile.TemporaryDirectory() as tmp:
            if how["tool"] == "music21 + fluidsynth":
                src = music21_midi(item.path, how, Path(tmp) / "score.mid")
            else:
                src = _extracted(item, Path(tmp))
            if how["tool"] == "soundfont samples":
                return self._looped_samples(src, sr, how["looped_to_s"])
            wav = Path(tmp) / "rendered.wav"
            if how["tool"] == "openmpt123":
                cmd = [*self.tools["module"], "--batch", "--quiet", "--samplerate", str(RENDER_SR), "--channels",
                       "1", "--repeat", "0", "--end-time", str(MAX_RENDER_S), "--gain", str(how["gain_db"]),
                       "--force", "-o", str(wav), str(src)]
            else:
                font = next(path for pkg, path, _ in self.soundfonts if pkg == how["soundfont"])
                cmd = [*self.tools["midi"], "-ni", "-q", "-r", str(RENDER_SR), "-g", str(how["gain"]),
                       "-R", str(int(how["reverb"])), "-C", str(int(how["chorus"])), "-F", str(wav), str(font),
                       str(src)]
            code, said = self._run_capped(cmd, wav)
            if code is None:
                raise audio.AudioError(item.member, f"{how['tool']} did not stop: over {MAX_RENDER_S} s of audio "
                                                    f"(a note that never ends?)")
            if code != 0 or not wav.exists() or wav.stat().st_size <= 44:
                raise audio.AudioError(item.member, f"{how['tool']} could not render it ({said or 'no output'})")
            return audio.load(wav, sr, allow_silent=True)

    def _run_capped(self, cmd: list[str], wav: Path) -> tuple[int | None, str]:
        """Run a renderer; stop it once ``wav`` holds more than :data:`MAX_RENDER_S` seconds (FluidSynth renders
        until no voice sounds, so a note left on renders for ever). ``(exit status or None if stopped, the
        tail of what it printed)``."""
        cap = (MAX_RENDER_S + 30) * RENDER_SR * 2 * 4  # stereo, up to 32-bit samples, and a WAV header
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env)
            try:
                while proc.poll() is None:
                    if wav.exists() and wav.stat().st_size > cap:
                        proc.kill()
                        proc.wait()
                        return None, ""
                    time.sleep(0.2)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            log.seek(0)
            return proc.returncode, log.read().strip()[-200:]

    @staticmethod
    def _looped_samples(path: Path, sr: int, seconds: float) -> np.ndarray:
        """The SoundFont's samples, each resampled to ``sr`` and repeated to ``seconds``, one after another."""
        parts = []
        for _, wav, rate in soundfont_samples(path):
            wav = soxr.resample(wav, rate, sr, quality="HQ").astype(np.float32) if rate != sr else wav
            if wav.size:
                parts.append(np.tile(wav, int(np.ceil(seconds * sr / wav.size)))[: int(seconds * sr)])
        if not parts:
            raise audio.AudioError(path, "a SoundFont without samples")
        return np.concatenate(parts).astype(np.float32)


# -- de-duplication ------------------------------------------------------------------------------------

SPEEDS = (0.8, 0.84, 0.88, 0.92, 0.95, 0.98, 1.0, 1.02, 1.05, 1.09, 1.13, 1.19, 1.25)
EXCERPTS = (0.25, 0.5, 0.75)  # where in a track its excerpts are cut (share of its length)
EXCERPT_S = 8.0
DUP_SIM = 0.7  # a window votes for a track when its nearest window there is at least this similar...
DUP_RATIO = 0.6  # ...and clearly nearer than any third track's: 1 - sim <= DUP_RATIO x (1 - third's sim)
DUP_SHARE = 0.5  # an excerpt is found in a track when this share of its windows vote for it
NEIGHBOURS = 32  # neighbours searched per window
# the shipped model that looks for copies, by name: fixed, so that the corpus a model was trained on is
# rebuilt the same after the default model changes (the thresholds above were measured with it)
DEDUPE_MODEL = "fplib-small-v1"
LOUD_DBFS = -45.0  # quieter windows (fades, silence) neither vote nor are searched


def _loud_windows(wav: np.ndarray, n: int, fe) -> np.ndarray:
    """Which of the ``n`` windows (every ``fe.hop_s``) of ``wav`` are above :data:`LOUD_DBFS`."""
    return np.array([audio.rms_dbfs(wav[i * fe.hop_len : i * fe.hop_len + fe.win_len]) >= LOUD_DBFS
                     for i in range(n)], dtype=bool)


def find_duplicates(records: list[dict], out: Path, model_path: str | os.PathLike | None = None,
                    progress: bool = True) -> dict[str, tuple[str, float, float]]:
    """``{key: (key of the longer track it copies, speed, share)}`` among the kept music records (``speed``:
    how fast the copy is played to match the original; 0.8 for a copy 1.25 times as fast).

    Every track is fingerprinted with the shipped model :data:`DEDUPE_MODEL` (or ``model_path``); three
    excerpts of each track, played at each of :data:`SPEEDS`, are searched among every other track's
    windows (faiss, exact inner product): :func:`duplicate_evidence`. A window votes for the track
    holding its nearest neighbour when that neighbour is close (:data:`DUP_SIM`) and clearly closer than
    the next tracks' but one (:data:`DUP_RATIO`, a ratio test against the third distinct track, so that
    two copies of the same audio do not hide each other: generic windows that resemble many tracks do
    not vote). A track is a duplicate when, at one speed, two of its three excerpts find one and the
    same longer track with most of their windows (:func:`decide_duplicates`)."""
    music = [r for r in records if r["role"] == "music" and r["status"] == "kept"]
    if len(music) < 2:
        return {}
    return decide_duplicates(music, duplicate_evidence(music, out, model_path, progress))


def duplicate_evidence(music: list[dict], out: Path, model_path: str | os.PathLike | None = None,
                       progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Per track, per window of its excerpts: ``speed`` and ``excerpt`` (indices into :data:`SPEEDS`,
    :data:`EXCERPTS`), ``top`` (the index of the other track nearest), ``s1`` (that similarity) and ``s2``
    (the third distinct track's: :func:`_nearest_tracks`). The track's own windows are not searched."""
    import faiss
    import soxr
    from tqdm.auto import tqdm

    from fplib.catalogue import fingerprint
    from fplib.checkpoints import load_model
    from fplib.pretrained import default_model

    model, fe = load_model(model_path or default_model(name=DEDUPE_MODEL))
    vectors, owner = [], []
    for i, r in enumerate(tqdm(music, desc="fingerprinting songs", unit="song", disable=not progress)):
        wav = audio.load(out / r["path"], fe.sr, allow_silent=True)
        v = fingerprint(wav, model, fe)
        loud = _loud_windows(wav, len(v), fe)
        vectors.append(v[loud])
        owner.append(np.full(int(loud.sum()), i))
    index = faiss.IndexFlatIP(vectors[0].shape[1])
    index.add(np.concatenate(vectors).astype(np.float32))
    owner_all = np.concatenate(owner)
    starts = np.cumsum([0] + [len(v) for v in vectors])  # track i's windows: ids starts[i] .. starts[i+1]-1
    evidence = []
    for i, r in enumerate(tqdm(music, desc="searching for copies", unit="song", disable=not progress)):
        wav = audio.load(out / r["path"], fe.sr, allow_silent=True)
        qs, labels = [], []
        for si, speed in enumerate(SPEEDS):
            for ei, at in enumerate(EXCERPTS):
                n = int(EXCERPT_S * fe.sr * speed)
                start = int(at * max(0, len(wav) - n))
                clip = wav[start : start + n]
                if speed != 1.0:  # played `speed` times faster: fewer samples at the same rate
                    clip = soxr.resample(clip, fe.sr * speed, fe.sr).astype(np.float32)
                q = fingerprint(clip, model, fe)
                q = q[_loud_windows(clip, len(q), fe)]
                qs.append(q)
                labels += [(si, ei)] * len(q)
        if not labels:
            evidence.append({k: np.zeros(0) for k in ("speed", "excerpt", "top", "s1", "s2")})
            continue
        lo = int(starts[i])
        params = faiss.SearchParameters(sel=faiss.IDSelectorNot(faiss.IDSelectorRange(lo, lo + len(vectors[i]))))
        sims, ids = index.search(np.concatenate(qs).astype(np.float32), NEIGHBOURS, params=params)
        other = np.where(ids >= 0, owner_all[np.maximum(ids, 0)], -1)
        sims = np.where(ids >= 0, sims, -np.inf)  # fewer vectors than neighbours (a tiny corpus)
        labels_a = np.array(labels)
        evidence.append({"speed": labels_a[:, 0], "excerpt": labels_a[:, 1], **_nearest_tracks(sims, other)})
    return evidence


def _nearest_tracks(sims: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Per query window (rows of ``sims`` / ``other``: its neighbours' similarities and tracks, best first):
    ``top`` (the nearest track), ``s1`` (its similarity) and ``s2`` (the similarity of the third distinct
    track: two copies of the same audio beside the query's own track do not hide each other; -inf when
    there are fewer than three)."""
    rows = np.arange(len(sims))
    top = other[rows, 0]
    s1 = sims[rows, 0]
    second = np.where(other != top[:, None], other, -1)
    first2 = np.argmax(second >= 0, axis=1)  # the first neighbour of another track
    t2 = np.where((second >= 0).any(axis=1), second[rows, first2], -1)
    third = (other != top[:, None]) & (other != t2[:, None]) & (other >= 0)
    s2 = np.where(third, sims, -np.inf).max(axis=1)
    return {"top": top, "s1": s1, "s2": s2}


def decide_duplicates(music: list[dict], evidence: list[dict[str, np.ndarray]]) -> dict[str, tuple[str, float, float]]:
    """:func:`find_duplicates`' decision on :func:`duplicate_evidence`."""
    found: dict[str, tuple[str, float, float]] = {}
    for i, (r, e) in enumerate(zip(music, evidence)):
        if not len(e["top"]):
            continue
        with np.errstate(invalid="ignore"):
            votes = (e["s1"] >= DUP_SIM) & (1 - e["s1"] <= DUP_RATIO * (1 - e["s2"]))
        best = None
        for si, speed in enumerate(SPEEDS):
            hits = []
            for ei in range(len(EXCERPTS)):
                sel = (e["speed"] == si) & (e["excerpt"] == ei)
                if not (sel & votes).any():
                    continue
                cands, counts = np.unique(e["top"][sel & votes], return_counts=True)
                k = int(np.argmax(counts))
                hits.append((int(cands[k]), counts[k] / sel.sum()))
            for cand in {h[0] for h in hits}:
                agree = [h[1] for h in hits if h[0] == cand and h[1] >= DUP_SHARE]
                if len(agree) >= 2 and (best is None or np.mean(agree) > best[2]):
                    best = (cand, speed, float(np.mean(agree)))
        if best is None:
            continue
        j, speed, share = best
        # the longer track is the original; of two equally long copies, the first in order stays
        if music[j]["seconds"] > r["seconds"] + 1.0 or (abs(music[j]["seconds"] - r["seconds"]) <= 1.0 and j < i):
            found[r["key"]] = (music[j]["key"], speed, share)
    # a copy of a copy points at the track that stays
    for k, (orig, speed, share) in list(found.items()):
        seen = {k}
        while orig in found and orig not in seen:
            seen.add(orig)
            orig = found[orig][0]
        found[k] = (orig, speed, share)
    return found


def _cached_duplicates(out: Path, records: list[dict], model_path, progress: bool) -> dict:
    """:func:`find_duplicates`, its evidence read from ``duplicates.npz`` when it was gathered for the same
    tracks (copies found earlier have been moved out of the split folders since; the decision is taken
    again, so a change of its settings needs no new search). Writes ``duplicates.json``: what was found."""
    music = [r for r in records if r["role"] == "music" and r["status"] == "kept"]
    if len(music) < 2:
        return {}
    from fplib.pretrained import default_model

    keys = [r["key"] for r in music]
    model_sha = storage.file_checksum(model_path or default_model(name=DEDUPE_MODEL))
    cache = out / "duplicates.npz"
    evidence = None
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if list(z["keys"]) == keys and "model" in z and str(z["model"]) == model_sha:
                evidence = [{f: z[f"{i}_{f}"] for f in ("speed", "excerpt", "top", "s1", "s2")}
                            for i in range(len(keys))]
    if evidence is None:
        # a copy moved out by an earlier run is searched where it is now
        evidence = duplicate_evidence([{**r, "path": _current_path(out, r)} for r in music], out, model_path,
                                      progress)
        arrays = {f"{i}_{f}": e[f] for i, e in enumerate(evidence) for f in e}
        with storage.atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array(keys), model=np.array(model_sha), **arrays)
    found = decide_duplicates(music, evidence)
    storage.write_json(out / "duplicates.json", {"tracks": keys, "found": found})
    return found


def _current_path(out: Path, r: dict) -> str:
    """Where a kept record's file is now (a duplicate found by an earlier run was moved under duplicates/)."""
    moved = Path("duplicates") / r["path"]
    return str(moved) if not (out / r["path"]).exists() and (out / moved).exists() else r["path"]


# -- rooms heard through loudspeakers ----------------------------------------------------------------------

ROOMS = {"train": 300, "val": 40}
SPEAKER_SHARE = 0.5  # share of the rooms convolved with a loudspeaker (cabinet) response
SYNTHETIC_NOISES = {"train": 32, "val": 8}
ROOM_SEED = 3000  # no other corpus (demo 0, tests 1000, calibration 2000) simulates rooms from it


def rooms(out: Path, records: list[dict], sr: int, progress: bool = True) -> dict[str, int]:
    """``CORPUS/{train,val}/rooms/``: rooms simulated by :func:`fplib.synth.simulate_rir`, a seeded
    :data:`SPEAKER_SHARE` of them convolved with a loudspeaker response of the same split (the responses
    are split by file). Existing files are kept (resumable)."""
    from scipy.signal import fftconvolve
    from tqdm.auto import tqdm

    from fplib import synth

    speakers = [r for r in records if r["role"] == "rir" and r["status"] == "kept"]
    by_split = {s: [r for r in speakers if split_of(r["key"], 0.2) == s] for s in ROOMS}
    made = {}
    for split, n in ROOMS.items():
        folder = out / split / "rooms"
        for i in tqdm(range(n), desc=f"rooms ({split})", unit="room", disable=not progress):
            seed = synth.item_seed(ROOM_SEED, split, i)
            rng = np.random.default_rng(seed)
            speaker = by_split[split][int(rng.integers(len(by_split[split])))] if by_split[split] and \
                rng.random() < SPEAKER_SHARE else None
            path = folder / ("speaker" if speaker else "plain") / f"room_{i:03d}.flac"
            if path.exists():
                continue
            ir, _ = synth.simulate_rir(seed, sr)
            if speaker:
                h = audio.load(out / speaker["path"], sr, allow_silent=True)
                ir = fftconvolve(ir, h)[: len(ir) + len(h) - 1]
            ir = (ir / max(1e-9, float(np.abs(ir).max()))).astype(np.float32)
            path.parent.mkdir(parents=True, exist_ok=True)
            audio.write(path, ir, sr, subtype="PCM_24")
        made[split] = len(list(folder.glob("*/*.flac")))
        noise = out / split / "noise" / "synthetic"
        noise.mkdir(parents=True, exist_ok=True)
        for i in range(SYNTHETIC_NOISES[split]):
            kind = synth.NOISE_KINDS[i % len(synth.NOISE_KINDS)]
            path = noise / f"{kind}_{i:02d}.flac"
            if not path.exists():
                audio.write(path, synth.synth_noise(kind, synth.item_seed(ROOM_SEED, f"noise-{split}", i), 30.0, sr),
                            sr, subtype="PCM_16")
    return made


# -- the whole job -------------------------------------------------------------------------------------


def default_root() -> Path:
    return storage.outputs_root() / "corpus"


def build(out: str | os.PathLike | None = None, debs: str | os.PathLike | None = None,
          only: list[str] | None = None, sr: int = audio.SR, dedupe: bool = True,
          model_path: str | os.PathLike | None = None, progress: bool = True, log=print) -> dict:
    """Build (or resume) the corpus in ``out``; returns the manifest. ``debs``: where ``.deb`` files are
    kept (default ``OUT/debs``); ``only``: a subset of the packages."""
    from tqdm.auto import tqdm

    out = Path(out) if out is not None else default_root()
    debs = Path(debs) if debs is not None else out / "debs"
    sources = [s for s in SOURCES if only is None or s.package in only]
    unknown = sorted(set(only or ()) - set(packages(SOURCES)))
    if unknown:
        raise CorpusError(f"not a corpus package: {', '.join(unknown)} (the packages: {', '.join(packages(SOURCES))})")
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / RECORDS
    done = {r["key"]: r for r in storage.read_jsonl(log_path)}
    unpacked, versions = {}, {}
    for package in sorted({s.package for s in sources if s.render != "music21"}):
        log(f"{package}: fetching and unpacking")
        deb = fetch(package, debs)
        unpacked[package] = unpack(deb, out / "unpacked" / package)
        versions[package] = version_of(deb)
    kinds = {s.render for s in sources if s.render}
    renderer = Renderer(out, debs, kinds) if kinds else None
    for source in sources:
        if source.render == "music21":
            import music21

            versions[source.package] = music21.__version__
            found, licence_of = music21_items(source)
            stanzas, fallback = [([i.member], licence_of[i.member]) for i in found], "unknown"
        else:
            root = unpacked[source.package]
            stanzas, fallback = package_licence(root, source.package)
            found = items(source, root)
        names = Counter(Path(i.member.split("::")[-1]).stem for i in found)
        todo = [i for i in found if i.key not in done]
        for item in tqdm(todo, desc=f"{source.package} ({source.role})", unit="file", disable=not progress):
            rec = process(item, out, sr, versions[source.package], licence_for(item.member, stanzas, fallback),
                          clash=names[Path(item.member.split("::")[-1]).stem] > 1, renderer=renderer)
            storage.append_jsonl(log_path, rec)
            done[rec["key"]] = rec
    # the manifest, the copies and the rooms are decided over every file logged, whichever packages this run did
    records = [r for r in done.values() if any(r["package"] == s.package and r["role"] == s.role for s in SOURCES)]
    for package in {r["package"] for r in records} & set(unpacked):  # licences as the copyright files say now
        stanzas, fallback = package_licence(unpacked[package], package)
        for r in records:
            if r["package"] == package:
                rendered = r.get("licence", "").partition("; rendered through")[1:]  # how a score was rendered
                r["licence"] = licence_for(r["file"], stanzas, fallback) + "".join(rendered)
    if dedupe:
        copies = _cached_duplicates(out, records, model_path, progress)
        for r in records:
            if r["key"] in copies:
                orig, speed, share = copies[r["key"]]
                r.update(status="duplicate", duplicate_of=orig, speed=speed, share=round(share, 3))
                dup = out / "duplicates" / r["path"]
                if (out / r["path"]).exists():
                    dup.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(out / r["path"], dup)
                r["path"] = str(dup.relative_to(out))
            elif r["role"] == "music" and r["status"] == "kept" and _current_path(out, r) != r["path"]:
                os.replace(out / _current_path(out, r), out / r["path"])  # no longer called a copy: back
    made = rooms(out, records, sr, progress)
    manifest = {"kind": KIND, "sample_rate": sr, "val_share": VAL_SHARE, "rooms": made,
                "packages": {**(_previous_packages(out)), **{p: versions[p] for p in sorted(versions)}},
                "files": sorted(records, key=lambda r: r["key"])}
    storage.write_json(out / MANIFEST, manifest)
    log(summary(manifest))
    return manifest


def _previous_packages(out: Path) -> dict:
    """The package versions of the manifest an earlier run wrote (a run over some packages keeps the others)."""
    try:
        return dict(storage.read_json(out / MANIFEST).get("packages", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def summary(manifest: dict) -> str:
    lines = []
    files = manifest["files"]
    for role in ROLES:
        for split in ("train", "val", None):
            kept = [r for r in files if r["role"] == role and r["split"] == split and r["status"] == "kept"]
            if kept:
                hours = sum(r["seconds"] for r in kept) / 3600
                lines.append(f"{role}{'/' + split if split else ''}: {len(kept)} files, {hours:.2f} h")
    dups = [r for r in files if r["status"] == "duplicate"]
    skipped = [r for r in files if r["status"] == "skipped"]
    lines.append(f"{len(dups)} duplicate(s) left out" + "".join(
        f"\n  {r['file']} ({r['package']}): copy of {r['duplicate_of'].split(':', 2)[2]}"
        + (f", {1 / r['speed']:.2f}x as fast" if r["speed"] != 1.0 else "")
        for r in dups))
    lines.append(f"{len(skipped)} file(s) skipped" + "".join(
        f"\n  {r['file']} ({r['package']}): {r['reason']}" for r in skipped if "too short" not in r["reason"]))
    short = sum(1 for r in skipped if "too short" in r["reason"])
    if short:
        lines.append(f"  ({short} of them too short to be a song or a noise: effects and jingles)")
    return "\n".join(lines)


# -- reading a corpus ----------------------------------------------------------------------------------


def resolve(path: str | os.PathLike) -> Path:
    """A corpus path as a profile or a run's parameters give it: absolute, or relative to the current folder,
    else to the project (``outputs/...`` meaning the outputs folder, ``$FPLIB_OUTPUTS`` where that is set)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    if p.parts and p.parts[0] == "outputs":
        return storage.outputs_root().joinpath(*p.parts[1:])
    return storage.project_root() / p


def training_folders(root: str | os.PathLike) -> dict[str, Path]:
    """A built corpus's folders in the shape of :func:`fplib.train.split_online_data`'s result: songs,
    rooms and noises of its ``train`` and ``val`` splits."""
    root = resolve(root)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{root}: no corpus here ({MANIFEST} missing); build it with build_corpus -o {root} "
                                f"(make corpus)")
    return {f"{split}_{kind}": root / split / folder for split in ("train", "val")
            for kind, folder in (("set", "music"), ("impulse_responses", "rooms"), ("background_noises", "noise"))}


def find_manifest(path: str | os.PathLike) -> Path | None:
    """The manifest of the corpus holding ``path`` (a file or folder inside it), if any."""
    p = Path(path).resolve()
    for d in [p, *p.parents]:
        m = d / MANIFEST
        if m.is_file():
            try:
                if storage.read_json(m).get("kind") == KIND:
                    return m
            except (OSError, ValueError, AttributeError):
                return None
    return None


def manifest_songs(manifest_path: str | os.PathLike) -> tuple[set[str], set[str]]:
    """``(resolved paths, decoded-audio sha256s)`` of every song a corpus holds (any split, duplicates too)."""
    m = Path(manifest_path)
    data = storage.read_json(m)
    paths, hashes = set(), set()
    for r in data["files"]:
        if r["role"] == "music" and r["status"] in ("kept", "duplicate"):
            paths.add(str((m.parent / r["path"]).resolve()))
            hashes.add(r["sha256"])
    return paths, hashes


def audio_hashes(path: str | os.PathLike, sr: int) -> set[str]:
    """The decoded-audio SHA-256 of a file as the manifest would record it (as decoded, and peak-normalised
    as the corpus writes music whose decoded peak exceeds full scale)."""
    wav = audio.load(path, sr, allow_silent=True)
    out = {decoded_sha256(wav)}
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 1.0:
        out.add(decoded_sha256(wav / peak))
    return out


def leaks(files: list[str | os.PathLike], songs: tuple[set[str], set[str]], sr: int = audio.SR) -> list[str]:
    """The ``files`` that are songs of a corpus (``songs``: :func:`manifest_songs` or :func:`listed_songs`),
    by path or by decoded audio (a copy elsewhere, or the package's original file)."""
    paths, hashes = songs
    out = []
    for f in files:
        if str(Path(f).resolve()) in paths:
            out.append(str(f))
            continue
        try:
            if audio_hashes(f, sr) & hashes:
                out.append(str(f))
        except audio.AudioError:
            continue
    return out


def training_list(manifest_path: str | os.PathLike) -> dict:
    """What a shipped model's ``NAME.training.json`` holds of its corpus: every song (train, val and left-out
    duplicates) by package, version, file, licence, split and decoded-audio SHA-256 (no audio)."""
    data = storage.read_json(manifest_path)
    keep = ("package", "version", "file", "licence", "split", "status", "seconds", "sha256")
    return {"kind": KIND + "-songs", "sample_rate": data["sample_rate"], "packages": data["packages"],
            "songs": [{k: r.get(k) for k in keep} for r in data["files"]
                      if r["role"] == "music" and r["status"] in ("kept", "duplicate")]}


def listed_songs(path: str | os.PathLike) -> tuple[set[str], set[str]]:
    """``(no paths, sha256s)`` of a :func:`training_list` file, for :func:`leaks`."""
    return set(), {s["sha256"] for s in storage.read_json(path)["songs"]}
