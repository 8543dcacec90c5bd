"""Scores of the real corpus rendered to audio: MIDI files through FluidSynth and a SoundFont, tracker modules
through libopenmpt's ``openmpt123``, music21's works written as MIDI first (:func:`music21_midi`), and the
recorded samples a SoundFont holds (:func:`soundfont_samples`), looped into noise files.

The tools run from their unpacked Debian packages (nothing is installed; :func:`tool_packages` asks apt which
libraries a tool needs), or from PATH where they are installed. Each file is rendered with settings drawn
from its key (:meth:`Renderer.settings`, recorded in the manifest), and a render is stopped once its output is longer
than :data:`MAX_RENDER_S` (FluidSynth renders until no voice sounds, so a note left on would render for ever).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soxr

from fplib import audio
from fplib.corpus_packages import CorpusError, Item, extracted, fetch, package_licence, unpack

GM_MELODIC = 96  # General MIDI programs 0-95 (pianos to synth pads; no effects or percussion kits)
# instruments for MIDI: (package, soundfont in it); each song is rendered through one, chosen from its key
SOUNDFONTS = (
    ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2"),
    ("musescore-general-soundfont-small", "usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
)
# the renderers, run from their unpacked Debian packages (nothing is installed): binary, its package, and the
# packages whose libraries it loads on a bare Debian 12 (used where apt cannot tell: see tool_packages); an
# installed binary on PATH is used instead when there is one
_SNDFILE = (
    "libsndfile1",
    "libflac12",
    "libogg0",
    "libvorbis0a",
    "libvorbisenc2",
    "libopus0",
    "libmpg123-0",
    "libmp3lame0",
    "libpulse0",
    "libasyncns0",
    "libjack-jackd2-0",
    "libsamplerate0",
)
TOOLS = {
    "midi": (
        "usr/bin/fluidsynth",
        (
            "fluidsynth",
            "libfluidsynth3",
            "libinstpatch-1.0-2",
            "libsdl2-2.0-0",
            "libdecor-0-0",
            "libwayland-cursor0",
            "libwayland-egl1",
            *_SNDFILE,
        ),
    ),
    "module": ("usr/bin/openmpt123", ("openmpt123", "libopenmpt0", "libportaudio2", "libvorbisfile3", *_SNDFILE)),
}


def tool_packages(package: str, fallback: tuple[str, ...]) -> list[str]:
    """``package`` and the packages it needs that this machine lacks, as apt resolves them (``apt-get install
    --simulate``: nothing is installed); ``fallback`` where apt cannot say (no apt, or an unknown package)."""
    try:
        r = subprocess.run(
            ["apt-get", "install", "--simulate", "--no-install-recommends", package],
            capture_output=True,
            text=True,
            timeout=120,
        )
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
                raise CorpusError(
                    f"{cmd[0]} does not run here ({(r.stderr or r.stdout).strip()[-300:]}); install "
                    f"it, or leave out the packages that need it (--packages)"
                )

    def settings(self, item: Item) -> dict:
        """How ``item`` is rendered, drawn from its key."""
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(item.key.encode()).digest()[:8], "little"))
        if item.source.render == "module":
            return {"tool": "openmpt123", "gain_db": round(float(rng.uniform(-6.0, 0.0)), 1)}
        if item.source.render == "soundfont":
            return {"tool": "soundfont samples", "looped_to_s": LOOP_TO_S}
        sf = int(rng.integers(len(SOUNDFONTS)))
        how = {
            "tool": "fluidsynth",
            "soundfont": SOUNDFONTS[sf][0],
            "gain": round(float(rng.uniform(0.2, 0.45)), 2),
            "reverb": bool(rng.random() < 0.5),
            "chorus": bool(rng.random() < 0.5),
        }
        if item.source.render == "music21":
            how.update(
                tool="music21 + fluidsynth",
                tempo=round(float(rng.uniform(0.8, 1.25)), 2),
                programs=[int(p) for p in rng.integers(0, GM_MELODIC, 8)],
                velocities=[int(v) for v in rng.integers(60, 120, 8)],
            )
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
                src = extracted(item, Path(tmp))
            if how["tool"] == "soundfont samples":
                return self._looped_samples(src, sr, how["looped_to_s"])
            wav = Path(tmp) / "rendered.wav"
            if how["tool"] == "openmpt123":
                cmd = [
                    *self.tools["module"],
                    "--batch",
                    "--quiet",
                    "--samplerate",
                    str(RENDER_SR),
                    "--channels",
                    "1",
                    "--repeat",
                    "0",
                    "--end-time",
                    str(MAX_RENDER_S),
                    "--gain",
                    str(how["gain_db"]),
                    "--force",
                    "-o",
                    str(wav),
                    str(src),
                ]
            else:
                font = next(path for pkg, path, _ in self.soundfonts if pkg == how["soundfont"])
                cmd = [
                    *self.tools["midi"],
                    "-ni",
                    "-q",
                    "-r",
                    str(RENDER_SR),
                    "-g",
                    str(how["gain"]),
                    "-R",
                    str(int(how["reverb"])),
                    "-C",
                    str(int(how["chorus"])),
                    "-F",
                    str(wav),
                    str(font),
                    str(src),
                ]
            code, said = self._run_capped(cmd, wav)
            if code is None:
                raise audio.AudioError(
                    item.member, f"{how['tool']} did not stop: over {MAX_RENDER_S} s of audio (a note that never ends?)"
                )
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
