"""The built-in demo corpus: songs, background noises and room impulse responses generated here and written
as ordinary audio files.

Nothing can be downloaded on the machines this project runs on, so a small corpus is generated,
deterministically: the rest of the pipeline reads it exactly as it reads a user's own folders.
Layout under ``root``::

    music/song_000.flac ...      # procedural songs (fplib.synth.music), 16 kHz mono FLAC (the 16 -> 8 kHz path)
    noise/<kind>_<k>.wav ...     # background noises (fplib.synth.noise), 8 kHz 16-bit WAV, cycling through NOISE_KINDS
    rir/room_000.wav ...         # pyroomacoustics shoebox rooms (fplib.synth.rooms), 16 kHz float WAV, peak 1
    corpus.json                  # the spec and every file's metadata; written last

Every item of the corpus gets its own seed from ``(spec.seed, item kind, index)`` (:func:`item_seed`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fplib import audio, storage
from fplib.data import item_rng
from fplib.synth.music import MUSIC_SR, synth_song
from fplib.synth.noise import NOISE_KINDS, NOISE_SR, synth_noise
from fplib.synth.rooms import RIR_SR, simulate_rir

# Bump when the generator's output changes: a corpus made by another version is regenerated.
SYNTH_VERSION = 2
MANIFEST = "corpus.json"


@dataclass(frozen=True)
class CorpusSpec:
    """What :func:`make_demo_corpus` generates (durations in seconds)."""

    n_songs: int = 16
    song_seconds: float = 30.0
    n_noises: int = 12
    noise_seconds: float = 20.0
    n_irs: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_songs", "n_noises", "n_irs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("song_seconds", "noise_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


def item_seed(seed: int, kind: str, index: int) -> int:
    """The seed of item ``index`` of ``kind`` ("music", "noise", "rir") in a corpus made with ``seed``."""
    return int(item_rng(seed, kind, index).integers(2**53))  # 53 bits: exact in JSON


def _plan(spec: CorpusSpec) -> list[tuple[str, str, int, str]]:
    """Every file of a corpus: (folder, file name, seed, noise kind or "")."""
    items = [("music", f"song_{i:03d}.flac", item_seed(spec.seed, "music", i), "") for i in range(spec.n_songs)]
    nk = len(NOISE_KINDS)
    for i in range(spec.n_noises):
        kind = NOISE_KINDS[i % nk]
        items.append(("noise", f"{kind}_{i // nk:02d}.wav", item_seed(spec.seed, "noise", i), kind))
    items += [("rir", f"room_{i:03d}.wav", item_seed(spec.seed, "rir", i), "") for i in range(spec.n_irs)]
    return items


# Names make_demo_corpus writes (and the temporary files of interrupted atomic writes of them).
_OWN_FILE = re.compile(r"^\.?(song_\d{3,}|room_\d{3,}|(" + "|".join(NOISE_KINDS) + r")_\d{2,})(\..*)?\.(flac|wav)$")


def _is_current(manifest: Path, spec_dict: dict, root: Path) -> bool:
    try:
        old = storage.read_json(manifest)
    except (OSError, ValueError):
        return False
    if old.get("spec") != spec_dict or old.get("version") != SYNTH_VERSION:
        return False
    return all((root / f["path"]).is_file() for f in old.get("files", []))


def make_demo_corpus(
    root: str | os.PathLike, spec: CorpusSpec = CorpusSpec(), progress: bool = True
) -> dict[str, Path]:
    """Write the demo corpus under ``root`` and return ``{"music": Path, "noise": Path, "rir": Path}``.

    If ``root/corpus.json`` already describes this spec (and its files exist) nothing is done. Otherwise
    the manifest is removed first, every file is (re)generated and written atomically, files of an
    earlier corpus that the new spec does not include are deleted (only names this module writes), and
    ``corpus.json`` is written last: an interrupted run leaves no manifest and is simply redone.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    dirs = {name: root / name for name in ("music", "noise", "rir")}
    manifest = root / MANIFEST
    spec_dict = dataclasses.asdict(spec)
    if _is_current(manifest, spec_dict, root):
        return dirs
    manifest.unlink(missing_ok=True)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    plan = _plan(spec)
    wanted = {(folder, name) for folder, name, _, _ in plan}
    for folder, d in dirs.items():
        for f in d.iterdir():
            if (
                f.is_file()
                and _OWN_FILE.match(f.name)
                and (folder, f.name) not in wanted
                and not storage.is_live_temp(f)
            ):  # another process may be writing the same corpus
                f.unlink()
    files = []
    for folder, name, seed, kind in tqdm(plan, desc="demo corpus", unit="file", disable=not progress):
        path = dirs[folder] / name
        if folder == "music":
            wav, meta = synth_song(seed, spec.song_seconds, MUSIC_SR)
            audio.write(path, wav, MUSIC_SR, subtype="PCM_16")
        elif folder == "noise":
            wav = synth_noise(kind, seed, spec.noise_seconds, NOISE_SR)
            meta = {"kind": kind, "seed": seed, "seconds": spec.noise_seconds, "sr": NOISE_SR}
            audio.write(path, wav, NOISE_SR, subtype="PCM_16")
        else:
            wav, meta = simulate_rir(seed, RIR_SR)
            audio.write(path, wav, RIR_SR, subtype="FLOAT")
        files.append({"path": f"{folder}/{name}", "type": folder, **meta})
    storage.write_json(manifest, {"version": SYNTH_VERSION, "spec": spec_dict, "files": files})
    return dirs


def demo_corpus(root: str | os.PathLike) -> dict[str, Path]:
    """The folders of a demo corpus that :func:`make_demo_corpus` finished writing under ``root``."""
    root = Path(root)
    if not (root / MANIFEST).exists():
        raise FileNotFoundError(f"{root}: no demo corpus ({MANIFEST} missing); run notebook 01_generate_dataset first")
    return {kind: root / kind for kind in ("music", "noise", "rir")}
