"""Fingerprinting a catalogue (``generate_fingerprints``): where the time goes, and the whole path's
speed in x real time next to the reference's way (one song at a time), both measured in this run.

1. Stages, one song after another, each timed alone: reading the file for its checksum, decoding
   (at the file's own rate), down-mixing and resampling to 8 kHz, the log-mel front end, the network,
   writing to the catalogue.
2. End to end: ``fplib.extraction.extract`` into a fresh catalogue, against the reference: the same
   stages one song at a time in one process, the network in torch (``reference.extract_sequential``:
   extraction as it was before decoding and the front end ran in a worker beside the network, and
   before the network ran in OpenVINO). Both produce the same fingerprints to 1e-5 (checked).

The corpus: ``--folder`` (any folder of songs), else the real-music benchmark's music if it has been
fetched (``benchmarks/real_music/setup_data.py``: openly licensed game music, Ogg Vorbis), else
synthetic songs written as 44.1 kHz stereo Ogg Vorbis.

    .venv/bin/python benchmarks/bench_extract.py [--folder SONGS] [--songs 40] [--arch small|full] [--quick]

``--quick``: the same two measurements on 4 synthetic songs of 30 s (about a minute); its figures are not
comparable with a full run's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soxr
import torch

from fplib import audio, engine, pretrained
from fplib.catalogue import Catalogue
from fplib.checkpoints import load_model
from fplib.extraction import extract
from fplib.features import logmel
from fplib.models.registry import build_model
from fplib.storage import file_checksum
from fplib.synth.music import synth_song

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "real_music"))
from reference import extract_sequential  # noqa: E402
from setup_data import files as real_music_files  # noqa: E402


def corpus(args, tmp: Path) -> list[Path]:
    if args.folder:
        songs = audio.list_audio(args.folder)
    elif args.quick:
        songs = []
    else:
        songs = real_music_files("hedgewars-data") + real_music_files("supertux-data")
        songs = [s for s in songs if s.suffix == ".ogg" and s.stat().st_size > 200_000]
        if not songs:
            print("(real-music data not fetched: synthetic songs as 44.1 kHz stereo Ogg Vorbis)")
    if not songs:
        for i in range(args.songs):
            wav, _ = synth_song(i, 30.0 if args.quick else 120.0, 44100)
            p = tmp / f"song_{i:03d}.ogg"
            audio.write(p, np.stack([wav, wav[::-1]], axis=1), 44100)
            songs.append(p)
    rng = np.random.default_rng(0)
    if len(songs) > args.songs:
        songs = sorted(rng.choice(songs, args.songs, replace=False).tolist())
    return [Path(s) for s in songs]


def stages(songs: list[Path], model: torch.nn.Module, fe, tmp: Path) -> dict[str, float]:
    t = dict.fromkeys(
        ["read + checksum", "decode", "downmix + resample", "front end", "network", "catalogue write"], 0.0
    )
    cat = Catalogue(tmp / "stages", fe, {"name": "bench"})
    for f in songs:
        t0 = time.perf_counter()
        checksum = file_checksum(f)
        t1 = time.perf_counter()
        meta = audio.info(f)
        wav_native = audio.load(f, meta.sr)  # no resampling: the decoder (and a down-mix)
        t2 = time.perf_counter()
        wav = soxr.resample(wav_native, meta.sr, fe.sr, quality="HQ").astype(np.float32)
        t3 = time.perf_counter()
        feats = logmel(torch.from_numpy(wav), fe)
        t4 = time.perf_counter()
        run = engine.runner(model, feats)
        with torch.inference_mode():
            vectors = torch.cat([run(feats[i : i + 256]) for i in range(0, len(feats), 256)]).numpy()
        t5 = time.perf_counter()
        cat.add(f, vectors, len(wav) / fe.sr, checksum, f.stem)
        t6 = time.perf_counter()
        for k, a, b in zip(t, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
            t[k] += b - a
    cat.close()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", help="songs to fingerprint (default: the real-music data, else synthetic)")
    ap.add_argument("--songs", type=int, default=40, help="at most this many songs, a seeded choice (40)")
    ap.add_argument(
        "--arch",
        choices=["small", "full"],
        default="small",
        help="small: the shipped model (nafp_small); full: an untrained full-width NAFP",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="4 synthetic songs of 30 s (about a minute; figures not comparable with a full run's)",
    )
    args = ap.parse_args()
    if args.quick:
        print("bench_extract QUICK MODE: 4 synthetic songs of 30 s; the figures are not comparable with a full run's")
        args.songs = min(args.songs, 4)
    torch.set_num_threads(args.threads)
    model, fe = load_model(pretrained.default_model())
    if args.arch == "full":
        model, _ = build_model("nafp", fe)
    model.eval()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        songs = corpus(args, tmp)
        seconds = sum(audio.info(s).duration for s in songs)
        print(
            f"bench_extract: {len(songs)} songs, {seconds / 3600:.2f} h of audio, model {args.arch}, "
            f"torch {torch.__version__}, {args.threads} threads"
        )
        extract_sequential(songs[:2], Catalogue(tmp / "warm", fe, {"name": "bench"}), model)  # warm-up

        t = stages(songs, model, fe, tmp)
        total = sum(t.values())
        print(f"\nstages, one after another ({total:.1f} s in all):")
        print(f"{'':22s}{'seconds':>9s}{'share':>8s}{'x real time':>13s}")
        for k, v in t.items():
            print(f"{k:22s}{v:9.2f}{v / total:8.0%}{seconds / v:13.0f}")

        t0 = time.perf_counter()
        ref_cat = Catalogue(tmp / "reference", fe, {"name": "bench"})
        os.environ[engine.ENGINE_ENV] = "torch"  # the reference runs the torch module, as before
        extract_sequential(songs, ref_cat, model)
        del os.environ[engine.ENGINE_ENV]
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        cat = Catalogue(tmp / "fplib", fe, {"name": "bench"})
        res = extract(songs, cat, model, progress=False)
        t_ours = time.perf_counter() - t0
        assert not res.skipped, res.skipped
        a, _ = cat.all_vectors()
        b, _ = ref_cat.all_vectors()
        same = a.shape == b.shape and float(np.abs(a - b).max()) < 1e-5

    print(f"\nend to end ({len(songs)} songs):")
    print(f"{'':40s}{'seconds':>9s}{'x real time':>13s}")
    print(f"{'fplib extract':40s}{t_ours:9.1f}{seconds / t_ours:13.0f}")
    print(f"{'reference (one song at a time, torch)':40s}{t_ref:9.1f}{seconds / t_ref:13.0f}")
    print(f"ratio: {t_ref / t_ours:.2f}x faster; same fingerprints: {same}")


if __name__ == "__main__":
    main()
