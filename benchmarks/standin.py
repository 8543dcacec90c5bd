"""Small stand-ins, made from the built-in synthetic material, for the data that the quick modes of the
benchmarks need and a fresh clone lacks: the real-music benchmark's data (``real_music/setup_data.py``)
and the real training corpus (``make corpus``). They have the same layout as the real ones, so the
scripts run the same code path end to end; the figures they give say nothing about real music.

Seeds of their own (no training run of the demo corpus has seen their songs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 770_000
SR = 8000


def _song(seed: int, seconds: float) -> np.ndarray:
    from fplib.synth.demo import item_seed
    from fplib.synth.music import synth_song

    return synth_song(item_seed(SEED, "standin-song", seed), seconds, SR)[0]


def real_music_data(folder: Path, seconds: float = 20.0, songs: tuple[int, int, int] = (3, 4, 3)) -> Path:
    """A stand-in of ``real_music/data/``: synthetic songs as Ogg Vorbis in the packages' folders (training
    music, the two held-out packages; ``songs`` of each) and synthetic ambience as the noise package, with a
    ``LICENSES.md`` saying what it is. Made once per folder; returns ``folder``."""
    from fplib import audio
    from fplib.synth.demo import item_seed
    from fplib.synth.noise import synth_noise

    if (folder / "LICENSES.md").exists():
        return folder
    where = {
        "supertux-data": "usr/share/games/supertux2/music",
        "hedgewars-data": "usr/share/games/hedgewars/Data/Music",
        "colobot-common-sounds": "usr/share/games/colobot/music",
    }
    k = 0
    for (package, sub), n in zip(where.items(), songs):
        for i in range(n):
            audio.write(folder / package / sub / f"song_{i:02d}.ogg", _song(k, seconds), SR)
            k += 1
    for i, kind in enumerate(("rain", "traffic", "cafe")):
        noise = synth_noise(kind, item_seed(SEED, "standin-noise", i), 15.0, SR)
        audio.write(
            folder / "megaglest-data/usr/share/games/megaglest/tilesets/standin/sounds" / f"{kind}.wav", noise, SR
        )
    (folder / "LICENSES.md").write_text(
        "# A stand-in of the benchmark data (benchmarks/standin.py): synthetic songs and noises, no licensed files\n"
    )
    return folder


def training_corpus(root: Path, seconds: float = 20.0) -> Path:
    """A stand-in of the corpus ``make corpus`` builds, in its layout (``fplib.corpus``): recorded songs and a
    rendered score (``rendered_with`` in the manifest) in ``train`` and ``val``, recorded noises in the
    manifest, synthetic noises and plain and loudspeaker rooms beside it. Made once; returns ``root``."""
    from fplib import audio, corpus, storage
    from fplib.synth.demo import item_seed
    from fplib.synth.noise import synth_noise
    from fplib.synth.rooms import simulate_rir

    if (root / corpus.MANIFEST).exists():
        return root
    pkg, version = "standin-music", "0.1-1"
    files = []

    def record(rel: str, wav: np.ndarray, role: str, split: str, **extra) -> None:
        audio.write(root / rel, wav, SR, subtype="PCM_16")
        member = f"usr/share/{pkg}/{role}/{Path(rel).stem}.ogg"
        files.append(
            {
                "key": f"{role}:{pkg}:{member}",
                "package": pkg,
                "version": version,
                "file": member,
                "role": role,
                "split": split,
                "licence": "stand-in",
                "status": "kept",
                "path": rel,
                "seconds": round(len(wav) / SR, 3),
                "sha256": corpus.decoded_sha256(wav),
                **extra,
            }
        )

    k = 100
    for split, n in (("train", 4), ("val", 4)):
        for i in range(n):
            extra = {"rendered_with": {"instrument": "stand-in"}} if i == n - 1 else {}
            record(f"{split}/music/{pkg}/song_{i:02d}.flac", _song(k, seconds), "music", split, **extra)
            k += 1
        noise = synth_noise("rain", item_seed(SEED, f"standin-{split}-noise", 0), 10.0, SR)
        record(f"{split}/noise/{pkg}/rain.flac", noise, "noise", split)
        for i, kind in enumerate(("pink", "babble")):
            wav = synth_noise(kind, item_seed(SEED, f"standin-{split}-synthetic", i), 10.0, SR)
            audio.write(root / split / "noise/synthetic" / f"{kind}_{i:02d}.flac", wav, SR, subtype="PCM_16")
        for i, kind in enumerate(("plain", "speaker")):
            ir = simulate_rir(item_seed(SEED, f"standin-{split}-room", i), SR)[0]
            audio.write(root / split / "rooms" / kind / f"room_{i:03d}.flac", ir, SR, subtype="PCM_16")
    storage.write_json(
        root / corpus.MANIFEST, {"kind": corpus.KIND, "sample_rate": SR, "packages": {pkg: version}, "files": files}
    )
    return root
