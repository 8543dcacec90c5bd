"""The real training corpus: openly licensed recorded music, ambience and responses from Debian packages.

``build_corpus`` (``make corpus``) fetches the packages of :data:`SOURCES` with ``apt-get download``,
unpacks them with ``dpkg-deb -x`` (nothing is installed; :mod:`fplib.corpus_packages`), decodes every file
they ship that a source names (also inside zip archives such as 0 A.D.'s ``public.zip`` and the Quake-style
``.pk3`` files) or renders it (scores: :mod:`fplib.corpus_render`), down-mixes and resamples it to the
model's rate and writes it as 16-bit FLAC::

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
left out (:mod:`fplib.corpus_dedupe`). The split is by song, decided from a hash of the package and the
file's path (so it does not move when packages are added). Audio never goes into git: the corpus lives
under ``outputs/``.

The job is resumable: each decoded file is logged (``records.jsonl``) as soon as it is written, and a
rerun skips what is logged. Files that cannot be decoded are logged with the reason and reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from fplib import audio, corpus_render, storage
from fplib.corpus_dedupe import DEDUPE_MODEL, decide_duplicates, duplicate_evidence
from fplib.corpus_packages import (
    CorpusError,
    Item,
    Source,
    extracted,
    fetch,
    items,
    licence_for,
    package_licence,
    unpack,
    version_of,
)

ROLES = ("music", "noise", "rir")
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
KIND = "fplib-corpus"
# music shorter than this is a jingle or an effect, not a song
MIN_MUSIC_S = 30.0
MIN_NOISE_S = 2.0
MAX_RIR_S = 2.0
VAL_SHARE = 0.12  # share of songs (and noise files) held out: validation and calibration negatives


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


# -- music21's works ---------------------------------------------------------------------------------

# music21's corpus: its licence notice says some encodings are for non-commercial use only and that each work's
# own licence governs. A work is used only when its own metadata states an open licence (public domain, CC0,
# CC BY, CC BY-SA), recorded per work; works with no stated licence, or a restrictive one, are left out.
OPEN_LICENCE = re.compile(r"public domain|\bcc0\b|\bcc-(?:sa-)?by\b|creative commons|\bp\.\s?d\.", re.I)
CLOSED_LICENCE = re.compile(r"non-?commercial|\bnc\b|all rights reserved", re.I)
SCORE_VERSIONS = 3  # each work rendered in this many instrumentations and tempi (all in the work's split)
VERSION_SEP = "#v"  # MEMBER#vK: version K of a work


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


# -- decoding and writing files -------------------------------------------------------------------


def _decode(item: Item, sr: int, renderer: corpus_render.Renderer | None = None) -> np.ndarray:
    if item.source.render:
        if renderer is None:
            raise CorpusError(f"{item.member}: a {item.source.render} file needs a Renderer")
        return renderer.render(item, sr)
    if item.in_archive is None:
        return audio.load(item.path, sr, allow_silent=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return audio.load(extracted(item, Path(tmp)), sr, allow_silent=True)
        except audio.AudioError as e:
            raise audio.AudioError(item.member, e.reason) from None


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


def process(
    item: Item,
    out: Path,
    sr: int,
    version: str,
    licence: str,
    clash: bool = False,
    renderer: corpus_render.Renderer | None = None,
) -> dict:
    """Decode (or render) one file and write it into the corpus; the record the manifest keeps of it."""
    role = item.source.role
    split = None if role == "rir" else split_of(f"{item.source.package}/{item.member.split(VERSION_SEP)[0]}")
    rec = {
        "key": item.key,
        "package": item.source.package,
        "version": version,
        "file": item.member,
        "role": role,
        "split": split,
        "licence": licence,
    }
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
    return {
        **rec,
        "status": "kept",
        "path": str(target.relative_to(out)),
        "seconds": round(seconds, 3),
        "sha256": decoded_sha256(pcm),
    }


# -- copies found earlier ---------------------------------------------------------------------------


def _cached_duplicates(out: Path, records: list[dict], model_path, progress: bool) -> dict:
    """:func:`fplib.corpus_dedupe.find_duplicates`, its evidence read from ``duplicates.npz`` when it was
    gathered for the same tracks (copies found earlier have been moved out of the split folders since; the
    decision is taken again, so a change of its settings needs no new search). Writes ``duplicates.json``:
    what was found."""
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
                evidence = [
                    {f: z[f"{i}_{f}"] for f in ("speed", "excerpt", "top", "s1", "s2")} for i in range(len(keys))
                ]
    if evidence is None:
        # a copy moved out by an earlier run is searched where it is now
        evidence = duplicate_evidence([{**r, "path": _current_path(out, r)} for r in music], out, model_path, progress)
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
    """``CORPUS/{train,val}/rooms/``: rooms simulated by :func:`fplib.synth.rooms.simulate_rir`, a seeded
    :data:`SPEAKER_SHARE` of them convolved with a loudspeaker response of the same split (the responses
    are split by file). Existing files are kept (resumable)."""
    from scipy.signal import fftconvolve
    from tqdm.auto import tqdm

    from fplib.synth.demo import item_seed
    from fplib.synth.noise import NOISE_KINDS, synth_noise
    from fplib.synth.rooms import simulate_rir

    speakers = [r for r in records if r["role"] == "rir" and r["status"] == "kept"]
    by_split = {s: [r for r in speakers if split_of(r["key"], 0.2) == s] for s in ROOMS}
    made = {}
    for split, n in ROOMS.items():
        folder = out / split / "rooms"
        for i in tqdm(range(n), desc=f"rooms ({split})", unit="room", disable=not progress):
            seed = item_seed(ROOM_SEED, split, i)
            rng = np.random.default_rng(seed)
            speaker = (
                by_split[split][int(rng.integers(len(by_split[split])))]
                if by_split[split] and rng.random() < SPEAKER_SHARE
                else None
            )
            path = folder / ("speaker" if speaker else "plain") / f"room_{i:03d}.flac"
            if path.exists():
                continue
            ir, _ = simulate_rir(seed, sr)
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
            kind = NOISE_KINDS[i % len(NOISE_KINDS)]
            path = noise / f"{kind}_{i:02d}.flac"
            if not path.exists():
                audio.write(
                    path, synth_noise(kind, item_seed(ROOM_SEED, f"noise-{split}", i), 30.0, sr), sr, subtype="PCM_16"
                )
    return made


# -- the whole job -------------------------------------------------------------------------------------


def default_root() -> Path:
    return storage.outputs_root() / "corpus"


def build(
    out: str | os.PathLike | None = None,
    debs: str | os.PathLike | None = None,
    only: list[str] | None = None,
    sr: int = audio.SR,
    dedupe: bool = True,
    model_path: str | os.PathLike | None = None,
    progress: bool = True,
    log=print,
) -> dict:
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
    renderer = corpus_render.Renderer(out, debs, kinds) if kinds else None
    for source in sources:
        if source.render == "music21":
            import music21

            versions[source.package] = music21.__version__
            found, licence_of = music21_items(source)  # each work's licence, as its own metadata states it
        else:
            root = unpacked[source.package]
            stanzas, fallback = package_licence(root, source.package)
            found = items(source, root)
            licence_of = {i.member: licence_for(i.member, stanzas, fallback) for i in found}
        names = Counter(Path(i.member.split("::")[-1]).stem for i in found)
        todo = [i for i in found if i.key not in done]
        for item in tqdm(todo, desc=f"{source.package} ({source.role})", unit="file", disable=not progress):
            rec = process(
                item,
                out,
                sr,
                versions[source.package],
                licence_of[item.member],
                clash=names[Path(item.member.split("::")[-1]).stem] > 1,
                renderer=renderer,
            )
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
    manifest = {
        "kind": KIND,
        "sample_rate": sr,
        "val_share": VAL_SHARE,
        "rooms": made,
        "packages": {**(_previous_packages(out)), **{p: versions[p] for p in sorted(versions)}},
        "files": sorted(records, key=lambda r: r["key"]),
    }
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
    lines.append(
        f"{len(dups)} duplicate(s) left out"
        + "".join(
            f"\n  {r['file']} ({r['package']}): copy of {r['duplicate_of'].split(':', 2)[2]}"
            + (f", {1 / r['speed']:.2f}x as fast" if r["speed"] != 1.0 else "")
            for r in dups
        )
    )
    lines.append(
        f"{len(skipped)} file(s) skipped"
        + "".join(f"\n  {r['file']} ({r['package']}): {r['reason']}" for r in skipped if "too short" not in r["reason"])
    )
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
    """A built corpus's folders in the shape of :func:`fplib.sources.split_online_data`'s result: songs,
    rooms and noises of its ``train`` and ``val`` splits."""
    root = resolve(root)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(
            f"{root}: no corpus here ({MANIFEST} missing); build it with build_corpus -o {root} (make corpus)"
        )
    return {
        f"{split}_{kind}": root / split / folder
        for split in ("train", "val")
        for kind, folder in (("set", "music"), ("impulse_responses", "rooms"), ("background_noises", "noise"))
    }


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
    return {
        "kind": KIND + "-songs",
        "sample_rate": data["sample_rate"],
        "packages": data["packages"],
        "songs": [
            {k: r.get(k) for k in keep}
            for r in data["files"]
            if r["role"] == "music" and r["status"] in ("kept", "duplicate")
        ],
    }


def listed_songs(path: str | os.PathLike) -> tuple[set[str], set[str]]:
    """``(no paths, sha256s)`` of a :func:`training_list` file, for :func:`leaks`."""
    return set(), {s["sha256"] for s in storage.read_json(path)["songs"]}
