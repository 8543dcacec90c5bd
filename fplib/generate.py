"""The static training set (the seed's ``generate_training_dataset.py``, README "The seed").

For every song, ``number_segments`` one-second segments are sampled (silent seconds skipped) and
each becomes a pair of log-mels, clean and degraded, saved as one plain ``float32 [2, 256, 32]``
``.npy`` file. Layout under ``<output_path>/Dataset_<N>/`` (N = audio files found)::

    train_set/<song>_<second>.npy      # [0] clean, [1] degraded, dB in [-80, 0]
    val_set/<song>_<second>.npy
    Samples/<song>_<second>.wav and <song>_<second>_augmented.wav   # a few songs, to listen to
    train_data.json, val_data.json     # {song file: ["<song>_<second>.wav", ...]} as in the seed's scripts
    generation.json                    # settings, front end, counts, skipped files, complete flag
    progress.jsonl                     # one line per finished song: what makes resuming possible

Songs, impulse responses and noises are each split into train and validation, so validation pairs
are degraded with rooms and noises never seen in training. An existing complete dataset is never
overwritten unless asked (asking again with the same settings just returns it); an interrupted one is
resumed (same settings required). Every song's
draws derive from (seed, song path), so a resumed run writes exactly what an uninterrupted one would.

Every file is written atomically and a song counts as done only once its line is in ``progress.jsonl``
(a line cut short by a kill is ignored and the song done again), so a run killed at any point and
run again gives the files of an uninterrupted run. A dataset with no training or no validation pair
(every song of the split unusable) is an error (:class:`fplib.data.NoUsableFiles`) that lists the songs.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fplib import audio, storage
from fplib.augment import AugmentConfig, Augmenter
from fplib.config import to_dict
from fplib.data import (
    IRBank,
    NoiseBank,
    NoUsableFiles,
    Skipped,
    item_rng,
    pad_stack,
    read_with_context,
    split_files,
    torch_generator,
)
from fplib.features import FrontEnd

# The seed's static generator drew SNRs from 0-20 dB; everything else as AugmentConfig.
STATIC_AUGMENT = AugmentConfig(snr_db=(0.0, 20.0))


@dataclass(frozen=True)
class GenerateConfig:
    number_segments: int = 5  # one-second segments sampled per song
    train_ratio: float = 0.8  # share of songs (and IRs, noises) for training
    seed: int = 0  # everything random derives from it
    n_sample_songs: int = 3  # training songs whose pairs are also written as audio to Samples/
    silence_dbfs: float = -50.0  # a second whose RMS is below this (dBFS) is skipped

    def __post_init__(self) -> None:
        if self.number_segments < 1:
            raise ValueError(f"number_segments must be >= 1, got {self.number_segments}")
        if not 0.0 < self.train_ratio < 1.0:
            raise ValueError(f"train_ratio must be in (0, 1), got {self.train_ratio}")


@dataclass
class GenerateResult:
    path: Path
    complete: bool
    n_train: int  # pairs
    n_val: int
    skipped: list[tuple[str, str]] = field(default_factory=list)


class DatasetExistsError(FileExistsError):
    pass


def segment_name(song: Path, root: Path) -> str:
    """A file-name-safe unique name for a song: its path under ``root`` without suffix, '/' -> '__'."""
    rel = song.relative_to(root).with_suffix("")
    return "__".join(rel.parts)


def generate_dataset(
    input_folder: str | os.PathLike,
    output_path: str | os.PathLike,
    impulse_response: str | os.PathLike | None = None,
    background_noise: str | os.PathLike | None = None,
    cfg: GenerateConfig = GenerateConfig(),
    aug: AugmentConfig = STATIC_AUGMENT,
    fe: FrontEnd = FrontEnd(),
    overwrite: bool = False,
    progress: bool = True,
    max_songs: int | None = None,
    device: str = "cpu",
) -> GenerateResult:
    """Write (or resume) ``<output_path>/Dataset_<N>``; see the module docstring.

    ``max_songs`` stops after that many songs have been processed in this call, leaving an
    incomplete dataset that the next call resumes (for time-boxed runs). Unreadable, too short or
    silent songs are skipped and reported in the result and in ``generation.json``.
    """
    input_folder = Path(input_folder)
    songs = audio.list_audio(input_folder)
    ir_files = audio.list_audio(impulse_response) if impulse_response else []
    noise_files = audio.list_audio(background_noise) if background_noise else []
    names: dict[str, Path] = {}
    for s in songs:
        clash = names.setdefault(segment_name(s, input_folder), s)
        if clash != s:
            raise ValueError(
                f"{clash} and {s} would write the same pair files ({segment_name(s, input_folder)}_*); "
                f"rename one of them"
            )
    out = Path(output_path) / f"Dataset_{len(songs)}"
    settings = {
        "input_folder": str(input_folder.resolve()),
        "impulse_response": str(Path(impulse_response).resolve()) if impulse_response else None,
        "background_noise": str(Path(background_noise).resolve()) if background_noise else None,
        "songs": [str(s.relative_to(input_folder)) for s in songs],
        "config": to_dict(cfg),
        "augment": to_dict(aug),
        "frontend": fe.to_dict(),
    }
    storage.check_writable(output_path, folder=True)  # before the work, not at its first file
    storage.check_writable(out, folder=True)
    if (out / "progress.jsonl").exists():  # appended to
        storage.check_writable(out / "progress.jsonl")
    storage.clean_stale_temps(out, *(out / sub for sub in ("train_set", "val_set", "Samples")))
    _prepare_output(out, settings, overwrite)

    skipped = Skipped()  # unusable impulse responses and noises (songs are logged in progress.jsonl)
    splits = _split(songs, cfg.train_ratio, cfg.seed)
    ir_split = _split(ir_files, cfg.train_ratio, cfg.seed + 1)
    noise_split = _split(noise_files, cfg.train_ratio, cfg.seed + 2)
    augmenter = Augmenter(aug, fe)
    records = storage.read_jsonl(out / "progress.jsonl")
    done = {(r["split"], r["song"]) for r in records}
    n_sampled = sum(1 for r in records if r.get("samples"))  # the first usable training songs get Samples/

    todo = [
        (split, s)
        for split in ("train", "val")
        for s in splits[split]
        if (split, str(s.relative_to(input_folder))) not in done
    ]
    banks: dict[str, tuple[IRBank | None, NoiseBank | None]] = {}
    n_done_now = 0
    bar = tqdm(
        total=len(songs), initial=len(songs) - len(todo), desc=f"pairs -> {out.name}", unit="song", disable=not progress
    )
    try:
        for split, song in todo:
            if max_songs is not None and n_done_now >= max_songs:
                break
            if split not in banks:
                banks[split] = (
                    IRBank(ir_split[split], fe.sr, aug.ir_max_s, skipped) if ir_split[split] else None,
                    NoiseBank(noise_split[split], fe.sr, skipped) if noise_split[split] else None,
                )
            irs, noises = banks[split]
            rel = str(song.relative_to(input_folder))
            samples = split == "train" and n_sampled < cfg.n_sample_songs
            try:
                names = _process_song(
                    song,
                    rel,
                    segment_name(song, input_folder),
                    out / f"{split}_set",
                    out / "Samples" if samples else None,
                    irs,
                    noises,
                    augmenter,
                    cfg,
                    device,
                )
                record = {"split": split, "song": rel, "segments": names, "samples": samples}
                n_sampled += samples
            except audio.AudioError as e:
                record = {"split": split, "song": rel, "skipped": e.reason}
            storage.append_jsonl(out / "progress.jsonl", record)
            n_done_now += 1
            bar.update(1)
    finally:
        bar.close()  # before any message about an interruption
    return _finish(out, settings, skipped)


def _split(files: list[Path], ratio: float, seed: int) -> dict[str, list[Path]]:
    train, val = split_files(files, ratio, seed) if files else ([], [])
    return {"train": train, "val": val}


def _process_song(
    song: Path,
    rel: str,
    name: str,
    set_dir: Path,
    samples_dir: Path | None,
    irs: IRBank | None,
    noises: NoiseBank | None,
    augmenter: Augmenter,
    cfg: GenerateConfig,
    device: str,
) -> list[str]:
    fe = augmenter.fe
    meta = audio.info(song)
    n_seconds = int(meta.duration // fe.win_s)
    if n_seconds < 1:
        raise audio.AudioError(song, f"too short: {meta.duration:.2f} s, at least {fe.win_s:.2f} s needed")
    rng = item_rng(cfg.seed, "song", rel)
    ctx_s = augmenter.context / fe.sr
    seconds, segs = [], []
    for sec in rng.permutation(n_seconds):
        seg = read_with_context(song, float(sec), fe.win_s, ctx_s, meta.duration, fe.sr)
        window = seg[augmenter.context : augmenter.context + fe.win_len]
        if audio.rms_dbfs(window) < cfg.silence_dbfs:
            continue
        seconds.append(int(sec))
        segs.append(seg)
        if len(seconds) == cfg.number_segments:
            break
    if not seconds:
        raise audio.AudioError(song, f"silent: no second louder than {cfg.silence_dbfs:.0f} dBFS RMS")
    order = np.argsort(seconds)
    seconds = [seconds[i] for i in order]
    seg_t = torch.from_numpy(np.stack([segs[i] for i in order])).to(device)
    noise_t = pad_stack([noises.sample(rng, fe.win_len) for _ in seconds]).to(device) if noises else None
    ir_t = pad_stack([irs.sample(rng) for _ in seconds]).to(device) if irs else None
    g = torch_generator(rng)
    draws = augmenter.draw(len(seconds), g)
    clean, degraded = augmenter.degrade(seg_t, noise_t, ir_t, draws)
    with torch.no_grad():
        feats_clean = augmenter.features(clean)
        feats_aug = augmenter.spec_mask(augmenter.features(degraded), draws)
    pairs = torch.stack([feats_clean[:, 0], feats_aug[:, 0]], dim=1).cpu().numpy().astype(np.float32)
    names = []
    for i, sec in enumerate(seconds):
        stem = f"{name}_{sec}"
        storage.save_array(set_dir / f"{stem}.npy", pairs[i])
        if samples_dir is not None:
            audio.write(samples_dir / f"{stem}.wav", clean[i].cpu().numpy(), fe.sr)
            audio.write(samples_dir / f"{stem}_augmented.wav", degraded[i].cpu().numpy(), fe.sr)
        names.append(f"{stem}.wav")  # the seed's naming: the second's name as if it were a wav file
    return names


def _prepare_output(out: Path, settings: dict, overwrite: bool) -> None:
    meta_path = out / "generation.json"
    if out.exists():
        if overwrite:
            shutil.rmtree(out)
        elif not meta_path.exists():
            if any(
                not storage.is_temp_file(p) and p.name not in ("train_set", "val_set", "Samples") for p in out.iterdir()
            ):
                raise DatasetExistsError(
                    f"{out}: exists and is not a dataset written by fplib; choose another output path or pass overwrite"
                )
        else:
            meta = storage.read_json(meta_path)
            if meta.get("complete") and meta.get("settings") == settings:
                return  # already complete with these settings: nothing to do
            if meta.get("complete"):
                raise DatasetExistsError(
                    f"{out}: a complete dataset with different settings already exists; "
                    f"pass overwrite (--overwrite) to replace it"
                )
            if meta.get("settings") != settings:
                changed = sorted(k for k in settings if meta.get("settings", {}).get(k) != settings[k])
                raise DatasetExistsError(
                    f"{out}: an interrupted dataset with different settings ({changed}) "
                    f"exists; pass overwrite (--overwrite) to start again"
                )
            return  # resume
    out.mkdir(parents=True, exist_ok=True)
    storage.write_json(meta_path, {"complete": False, "settings": settings})
    for sub in ("train_set", "val_set", "Samples"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _finish(out: Path, settings: dict, skipped: Skipped) -> GenerateResult:
    records = storage.read_jsonl(out / "progress.jsonl")
    done = {(r["split"], r["song"]) for r in records}
    data: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}}
    skipped_all = {r["song"]: r["skipped"] for r in records if "skipped" in r}
    for r in records:
        if "segments" in r:
            data[r["split"]][r["song"]] = r["segments"]
    complete = len(done) == len(settings["songs"])
    n_train = sum(len(v) for v in data["train"].values())
    n_val = sum(len(v) for v in data["val"].values())
    previous = storage.read_json(out / "generation.json").get("skipped_other_files", [])
    other = {(d["path"], d["reason"]) for d in previous} | set(skipped.items)
    if complete:
        storage.write_json(out / "train_data.json", data["train"])
        storage.write_json(out / "val_data.json", data["val"])
    storage.write_json(
        out / "generation.json",
        {
            "complete": complete,
            "settings": settings,
            "pairs": {"train": n_train, "val": n_val},
            "skipped_songs": skipped_all,
            "skipped_other_files": [{"path": p, "reason": r} for p, r in sorted(other)],
        },
    )
    root = Path(settings["input_folder"])
    report = [(str(root / song), reason) for song, reason in skipped_all.items()] + sorted(other)
    if complete and not (n_train and n_val):
        empty = [split for split, n in (("train", n_train), ("val", n_val)) if not n]
        failed = [(str(root / r["song"]), r["skipped"]) for r in records if "skipped" in r and r["split"] in empty]
        kind = {"train": "training", "val": "validation"}
        what = "songs" if len(empty) == 2 else f"{kind[empty[0]]} songs"
        note = "" if len(empty) == 2 else f" (those drawn for {kind[empty[0]]}; add usable songs or change the split)"
        raise NoUsableFiles(what, failed, note + f", as {out / 'generation.json'} records")
    return GenerateResult(out, complete, n_train, n_val, report)


def find_dataset(folder: str | os.PathLike) -> Path:
    """The complete ``Dataset_<N>`` under ``folder`` (as notebook 01 writes it into ``<run>/dataset``)."""
    found = sorted(
        p
        for p in Path(folder).glob("Dataset_*")
        if (p / "generation.json").exists() and storage.read_json(p / "generation.json").get("complete")
    )
    if not found:
        raise FileNotFoundError(f"{folder}: no complete Dataset_<N> in it; run notebook 01_generate_dataset first")
    if len(found) > 1:
        raise ValueError(f"{folder}: several datasets ({[p.name for p in found]}); keep one")
    return found[0]
