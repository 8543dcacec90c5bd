"""What training reads: (clean, degraded) pairs on disk, or songs degraded on the fly, and the
``dynamic_online`` split of folders of songs, rooms and noises into training and validation.

* :func:`static_source`: the ``.npy`` pairs written by notebook 01 / ``generate_training_dataset``.
* :func:`online_source`: segments of songs read on the fly (only the needed part of each song is decoded
  per item), degraded in batches on the training device, from the six folders of :class:`OnlineFolders`.
* :func:`split_online_data` / :func:`record_split`: the run's ``online_data/split.json``.

A song that fails to decode during training (in a DataLoader worker or not) is skipped: its items are
left out of their batches, it is reported once, and training goes on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from fplib import audio, runs, storage
from fplib.augment import AugmentConfig, Augmenter
from fplib.data import IRBank, NoiseBank, SegmentDataset, Skipped, collate_segments
from fplib.features import FrontEnd
from fplib.train_config import TrainConfig


class PairFiles(Dataset):
    """The ``.npy`` pairs of a ``train_set`` / ``val_set`` folder: item = ``float32 [2, F, T]``."""

    def __init__(self, folder: str | os.PathLike, fe: FrontEnd):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder of pairs not found (notebook 01_generate_dataset writes it)")
        self.files = sorted(folder.glob("*.npy"))
        self.files = [f for f in self.files if not f.name.startswith(".")]
        if not self.files:
            raise ValueError(f"{folder}: no .npy pairs in it")
        first = storage.load_array(self.files[0])
        if first.shape != (2, fe.n_mels, fe.n_frames):
            raise ValueError(f"{self.files[0]}: pair of shape {first.shape}, expected (2, {fe.n_mels}, {fe.n_frames})")
        meta = folder.parent / "generation.json"
        if meta.exists():  # refuse pairs made with another front end
            made = storage.read_json(meta)["settings"].get("frontend")
            if made and made != fe.to_dict():
                raise ValueError(f"{folder}: pairs were made with front end {made}, training expects {fe.to_dict()}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(storage.load_array(self.files[i]))


@dataclass
class StaticSource:
    """Pairs precomputed on disk."""

    train: PairFiles
    val: PairFiles

    def batches(
        self, loader_batch: dict | torch.Tensor, device: torch.device, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = loader_batch.to(device, non_blocking=True)
        return x[:, :1], x[:, 1:]

    collate = None

    def val_pairs(self, device: torch.device, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.val), batch):
            x = torch.stack([self.val[j] for j in range(i, min(i + batch, len(self.val)))]).to(device)
            yield x[:, :1], x[:, 1:]


@dataclass
class OnlineSource:
    """Segments read on the fly, degraded on the training device."""

    train: SegmentDataset
    val: SegmentDataset
    augmenter: Augmenter
    seed: int

    collate = staticmethod(collate_segments)
    failed: dict[str, str] = field(default_factory=dict)  # songs that failed to decode during training

    def batches(self, b: dict, device: torch.device, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The (clean, degraded) pairs of a batch; items whose song failed to decode are left out."""
        b = self.usable(b)
        seg = b["seg"].to(device, non_blocking=True)
        noise = b["noise"].to(device, non_blocking=True) if "noise" in b else None
        ir = b["ir"].to(device, non_blocking=True) if "ir" in b else None
        with torch.no_grad():
            return self.augmenter.pairs(seg, noise, ir, g)

    def usable(self, b: dict) -> dict:
        """``b`` without its failed items (:func:`fplib.data.collate_segments` marks them); each newly failed
        song is reported once on standard error."""
        errors = b.get("errors") or []
        for path, reason in errors:
            if path not in self.failed:
                self.failed[path] = reason
                print(
                    f"skipped {path}: {reason} (its segments are left out; training goes on)",
                    file=sys.stderr,
                    flush=True,
                )
        if not errors:
            return b
        ok = b["ok"]
        return {k: v[ok] for k, v in b.items() if isinstance(v, torch.Tensor)}

    def val_pairs(self, device: torch.device, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.val.set_epoch(0)  # the same validation segments and degradations every epoch
        loader = DataLoader(self.val, batch_size=batch, shuffle=False, collate_fn=collate_segments)
        for k, b in enumerate(loader):
            xa, xb = self.batches(b, device, torch.Generator().manual_seed(self.seed * 1000003 + k))
            if len(xa):
                yield xa, xb


def static_source(train_dir: str | os.PathLike, val_dir: str | os.PathLike, fe: FrontEnd) -> StaticSource:
    return StaticSource(PairFiles(train_dir, fe), PairFiles(val_dir, fe))


@dataclass(frozen=True)
class PairFolders:
    """The folders of the static mode: training and validation pairs (``Dataset_N/train_set``, ``val_set``)."""

    train: str | os.PathLike
    val: str | os.PathLike


@dataclass(frozen=True)
class UnsplitFolders:
    """The folders of the ``dynamic_online`` mode: songs, rooms and noises that :func:`split_online_data`
    splits into training and validation (``train_ratio`` of each for training)."""

    songs: str | os.PathLike
    irs: str | os.PathLike
    noises: str | os.PathLike
    train_ratio: float = 0.8


@dataclass(frozen=True)
class OnlineFolders:
    """The folders of the online modes: songs, room impulse responses and background noises, each for
    training and for validation (rooms and noises are optional: None leaves that degradation out)."""

    train_songs: str | os.PathLike
    val_songs: str | os.PathLike
    train_irs: str | os.PathLike | None = None
    train_noises: str | os.PathLike | None = None
    val_irs: str | os.PathLike | None = None
    val_noises: str | os.PathLike | None = None

    @classmethod
    def from_split(cls, split: dict[str, Path]) -> OnlineFolders:
        """From :func:`split_online_data`'s (or :func:`record_split`'s) folders, keyed ``train_set``,
        ``train_impulse_responses``, ``train_background_noises``, ``val_set``, ... (rooms and noises optional)."""
        return cls(
            split["train_set"],
            split["val_set"],
            split.get("train_impulse_responses"),
            split.get("train_background_noises"),
            split.get("val_impulse_responses"),
            split.get("val_background_noises"),
        )


def online_source(
    folders: OnlineFolders, cfg: TrainConfig, aug: AugmentConfig, fe: FrontEnd, skipped: Skipped
) -> OnlineSource:
    """Check every folder before any work starts (missing or empty folders are errors), then build
    the datasets; unreadable files are skipped and recorded in ``skipped``."""
    named = {
        "training songs": folders.train_songs,
        "validation songs": folders.val_songs,
        "training impulse responses": folders.train_irs,
        "training noises": folders.train_noises,
        "validation impulse responses": folders.val_irs,
        "validation noises": folders.val_noises,
    }
    files = {}
    for what, folder in named.items():
        if folder is None:
            continue
        try:
            files[what] = audio.list_audio(folder)
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            raise type(e)(f"{what}: {e}") from None
    augmenter = Augmenter(aug, fe)

    def banks(irs_key: str, noises_key: str) -> tuple[IRBank | None, NoiseBank | None]:
        return (
            IRBank(files[irs_key], fe.sr, aug.ir_max_s, skipped) if irs_key in files else None,
            NoiseBank(files[noises_key], fe.sr, skipped) if noises_key in files else None,
        )

    tr_irs, tr_noises = banks("training impulse responses", "training noises")
    va_irs, va_noises = banks("validation impulse responses", "validation noises")
    train = SegmentDataset(
        files["training songs"],
        tr_noises,
        tr_irs,
        augmenter.context,
        seed=cfg.seed,
        items_per_song=cfg.items_per_song,
        win_s=fe.win_s,
        sr=fe.sr,
        skipped=skipped,
        preload=cfg.preload,
        what="training songs",
    )
    val = SegmentDataset(
        files["validation songs"],
        va_noises,
        va_irs,
        augmenter.context,
        seed=cfg.seed + 1,
        items_per_song=cfg.val_items_per_song,
        win_s=fe.win_s,
        sr=fe.sr,
        skipped=skipped,
        preload=cfg.preload,
        what="validation songs",
    )
    return OnlineSource(train, val, augmenter, cfg.seed)


def shared_files(source: StaticSource | OnlineSource) -> list[str]:
    """The files (songs, or pairs) that ``source`` validates on and also trains on (the same file, through
    links or not): its validation then measures how well songs trained on are recognised, not new ones
    (``dynamic_online`` with a single song shares it; so do two modes given the same folder twice)."""

    def files(ds) -> list:
        return list(getattr(ds, "songs", None) or getattr(ds, "files", None) or [])

    def key(f) -> tuple:  # the file itself, through symbolic and hard links (dynamic_online's split links)
        try:
            st = os.stat(f)
            return st.st_dev, st.st_ino
        except OSError:
            return (os.path.realpath(f),)

    trained = {key(f) for f in files(source.train)}
    return sorted(str(f) for f in files(source.val) if key(f) in trained)


def split_online_data(
    songs: str | os.PathLike,
    irs: str | os.PathLike,
    noises: str | os.PathLike,
    out: str | os.PathLike,
    train_ratio: float = 0.8,
    seed: int = 0,
) -> dict[str, Path]:
    """The ``dynamic_online`` split: ``out/online_data/{train,val}/{train,val}_{set,impulse_responses,
    background_noises}``. Files are linked, not copied (symbolic links, or hard links where symbolic
    links are not allowed, copies only as a last resort), so gigabytes of audio are not duplicated.
    The split is seeded; an existing split with the same files is reused, a different one is an error
    (``split.json`` records each folder by its place under ``online_data`` and each file by its absolute
    path, so the same folders given by another path, relative or absolute, are the same split)."""
    from fplib.data import split_files

    root = runs.Run(Path(out)).online_data
    kinds = {"set": songs, "impulse_responses": irs, "background_noises": noises}
    plan: dict[str, list[tuple[Path, Path]]] = {}
    for k, (kind, folder) in enumerate(kinds.items()):
        files = audio.list_audio(folder)
        for split, chosen in zip(("train", "val"), split_files(files, train_ratio, seed + k)):
            dest = root / split / f"{split}_{kind}"
            plan[str(dest)] = [(f, dest / "__".join(f.relative_to(folder).parts)) for f in chosen]
            targets = [t for _, t in plan[str(dest)]]
            if len(set(targets)) != len(targets):
                raise ValueError(f"{folder}: two files map to the same name in {dest} (a/b.wav and a__b.wav?)")
    manifest = {_split_key(d): sorted(str(src.resolve()) for src, _ in pairs) for d, pairs in plan.items()}
    meta_path = root / "split.json"
    storage.clean_stale_temps(root)  # a split.json whose writer was killed
    if meta_path.exists():
        before = storage.read_json(meta_path)
        old = {_split_key(d): sorted(str(Path(f).resolve()) for f in files) for d, files in before.items()}
        if old != manifest:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise FileExistsError(
                f"{root}: holds a different split (other files in {', '.join(changed)}); "
                f"remove it or choose another output path"
            )
        if before != manifest:  # written by an earlier version, with the paths as given
            storage.write_json(meta_path, manifest)
    else:
        for pairs in plan.values():
            for src, dst in pairs:
                _link(src.resolve(), dst)
        storage.write_json(meta_path, manifest)
    return {d.rsplit("/", 1)[-1]: Path(d) for d in plan}


def record_split(folders: dict[str, Path], out: str | os.PathLike) -> dict[str, Path]:
    """For data already split into folders (``{"train_set": ..., "val_set": ..., ...}`` as
    :func:`split_online_data` returns, e.g. :func:`fplib.corpus.training_folders`): write the run's
    ``split.json`` the same way (each folder's files by absolute path; nothing linked), so that the
    evaluation knows which songs the run trained on. Returns ``folders``."""
    root = runs.Run(Path(out)).online_data
    manifest = {
        f"{name.split('_')[0]}/{name}": sorted(str(p.resolve()) for p in audio.list_audio(folder))
        for name, folder in folders.items()
    }
    storage.write_json(root / "split.json", manifest)
    return folders


def _split_key(folder: str) -> str:
    """``.../online_data/train/train_set`` -> ``train/train_set``."""
    return "/".join(Path(folder.replace("\\", "/")).parts[-2:])


def _link(src: Path, dst: Path) -> None:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        dst.symlink_to(src)
    except OSError:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
