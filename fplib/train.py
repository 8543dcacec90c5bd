"""Contrastive training of a fingerprinter, in the original ``trainer``'s modes.

* ``static``: (clean, degraded) log-mel pairs written by notebook 01 / ``generate_training_dataset``.
* ``dynamic``: online augmentation from folders of songs, impulse responses and noises (already
  split into train and validation); only the needed segment of each song is decoded per item, and
  the degradations run batched on the training device.

One call of :func:`train` runs (or resumes) a run in ``out_dir``: ``best.pt`` (best validation
retrieval), ``last.pt`` (end of the last finished epoch), ``metrics.jsonl`` (one line per epoch) and
``config.json``. Checkpoints hold everything needed to use or resume them and are loaded with
``torch.load(weights_only=True)`` (no arbitrary pickle). Every random draw derives from the seed and
the epoch, so a resumed run reproduces the curve of an uninterrupted one.

At the end of an epoch ``last.pt`` is written first: it is what makes the epoch count as done, and it
holds the epoch's metrics and whether it was the best. Then ``best.pt`` (if the epoch was the best)
and the epoch's line of ``metrics.jsonl``. A resumed run first finishes what a killed one left undone
after ``last.pt`` (the best checkpoint, the metrics line), so a kill at any point followed by a resume
gives the files of an uninterrupted run (every file is written atomically, see :mod:`fplib.storage`).
A song that fails to decode during training (in a DataLoader worker or not) is skipped: its items are
left out of their batches, it is reported once, and training goes on.

Several GPUs or machines: run the same entry point under ``torchrun``. ``batch_size`` is the global
batch: each of the W ranks takes ``batch_size / W`` pairs, and NT-Xent gathers the embeddings of all
ranks, so every anchor sees the negatives of the whole global batch, exactly as one process would.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from fplib import audio, codes, runs, storage
from fplib.augment import AugmentConfig, Augmenter
from fplib.checkpoints import load_checkpoint, load_model, resolve_device, save_checkpoint  # noqa: F401
from fplib.config import to_dict
from fplib.data import IRBank, NoiseBank, SegmentDataset, Skipped, collate_segments, item_rng, worker_init_fn
from fplib.features import FrontEnd
from fplib.losses import contrastive
from fplib.models import build_model, kind_of_model, variant
from fplib.optim import make_optimizer, warmup_cosine


@dataclass(frozen=True)
class TrainConfig:
    model: str = "nafp"  # registered architecture (fplib.models.model_names())
    model_settings: dict = field(default_factory=dict)  # overrides of the architecture's settings
    epochs: int = 200  # maximum epochs (early stopping may end sooner)
    batch_size: int = 32  # global batch of pairs (split across ranks under torchrun)
    optim: str = "Adam"  # Adam or Lamb
    lr: float = 1e-4  # learning rate at lr_ref_batch pairs per batch
    lr_ref_batch: int = 120  # the lr is scaled by batch_size / lr_ref_batch (NAFP: 1e-4 at 120)
    weight_decay: float = 0.0  # on weights only (not biases or norms)
    warmup_frac: float = 0.05  # share of all steps spent warming the lr up
    temperature: float | None = None  # NT-Xent temperature; None: the family's (NAFP 0.05, ATTN 0.1)
    patience: int = 20  # epochs without a better validation hit rate before stopping
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes
    items_per_song: int = 8  # dynamic mode: segments drawn per training song per epoch
    val_items_per_song: int = 4  # dynamic mode: fixed segments per validation song
    preload: bool = False  # dynamic mode: decode every song once and hold it in memory
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    grad_clip: float = 0.0  # max gradient norm (0 = off)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if self.optim.lower() not in ("adam", "lamb"):
            raise ValueError(f"optim must be Adam or Lamb, got {self.optim!r}")
        if self.temperature is None:  # the family's default, recorded in config.json and the checkpoints
            object.__setattr__(self, "temperature", float(variant(self.model).train_defaults.get("temperature", 0.05)))

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_ref_batch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# -- data ---------------------------------------------------------------------------------------

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

    def batches(self, loader_batch: dict | torch.Tensor, device: torch.device, g: torch.Generator
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
                print(f"skipped {path}: {reason} (its segments are left out; training goes on)", file=sys.stderr,
                      flush=True)
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


def online_source(train_songs: str | os.PathLike, train_irs: str | os.PathLike | None,
                  train_noises: str | os.PathLike | None, val_songs: str | os.PathLike,
                  val_irs: str | os.PathLike | None, val_noises: str | os.PathLike | None,
                  cfg: TrainConfig, aug: AugmentConfig, fe: FrontEnd, skipped: Skipped) -> OnlineSource:
    """Check every folder before any work starts (missing or empty folders are errors), then build
    the datasets; unreadable files are skipped and recorded in ``skipped``."""
    folders = {"training songs": train_songs, "validation songs": val_songs, "training impulse responses": train_irs,
               "training noises": train_noises, "validation impulse responses": val_irs,
               "validation noises": val_noises}
    files = {}
    for what, folder in folders.items():
        if folder is None:
            continue
        try:
            files[what] = audio.list_audio(folder)
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            raise type(e)(f"{what}: {e}") from None
    augmenter = Augmenter(aug, fe)

    def banks(irs_key: str, noises_key: str) -> tuple[IRBank | None, NoiseBank | None]:
        return (IRBank(files[irs_key], fe.sr, aug.ir_max_s, skipped) if irs_key in files else None,
                NoiseBank(files[noises_key], fe.sr, skipped) if noises_key in files else None)

    tr_irs, tr_noises = banks("training impulse responses", "training noises")
    va_irs, va_noises = banks("validation impulse responses", "validation noises")
    train = SegmentDataset(files["training songs"], tr_noises, tr_irs, augmenter.context, seed=cfg.seed,
                           items_per_song=cfg.items_per_song, win_s=fe.win_s, sr=fe.sr, skipped=skipped,
                           preload=cfg.preload, what="training songs")
    val = SegmentDataset(files["validation songs"], va_noises, va_irs, augmenter.context, seed=cfg.seed + 1,
                         items_per_song=cfg.val_items_per_song, win_s=fe.win_s, sr=fe.sr, skipped=skipped,
                         preload=cfg.preload, what="validation songs")
    return OnlineSource(train, val, augmenter, cfg.seed)


# -- the loop -----------------------------------------------------------------------------------

def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def setup_distributed(device: str = "auto") -> torch.device:
    """Initialise torch.distributed when launched by torchrun (NCCL on GPUs, Gloo on CPU); pick the device."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _, _, local = _dist_info()
    if use_cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu" if device == "auto" else device)


def evaluate(model: torch.nn.Module, source, device: torch.device, batch: int, temperature: float,
             model_name: str | None = None) -> dict[str, float]:
    """Validation, the same for every family: the family's training objective (mean over batches) and
    the top-1 hit rate of each degraded window among all clean validation windows, compared as the
    fingerprints will be stored and searched (inner product, or Hamming similarity of binary codes)."""
    v = variant(model_name) if model_name else None
    objective = (v.objective if v else None) or contrastive
    kind = v.kind if v else "float"
    model.eval()
    za, zb, losses, n_loss = [], [], [], 0
    with torch.no_grad():
        for xa, xb in source.val_pairs(device, batch):
            if xa.shape[0] > 1:  # a batch of one has no negatives
                loss, a, b = objective(model, model, xa, xb, temperature, gather=False)
                losses.append(float(loss) * a.shape[0])
                n_loss += a.shape[0]
            else:
                a, b = model(xa), model(xb)
            za.append(a.float())
            zb.append(b.float())
    za, zb = torch.cat(za), torch.cat(zb)
    sims = codes.torch_similarity_matrix(zb, za, kind)
    top1 = float((sims.argmax(dim=1) == torch.arange(len(za), device=sims.device)).float().mean())
    model.train()
    return {"val_loss": sum(losses) / max(1, n_loss), "val_top1": top1, "val_pairs": len(za)}


def train(cfg: TrainConfig, source: StaticSource | OnlineSource, out_dir: str | os.PathLike, fe: FrontEnd,
          resume: bool = False, device: str = "auto", progress: bool = True, stop_after: int | None = None,
          run_params: dict | None = None, init: str | os.PathLike | None = None) -> list[dict]:
    """Train (or with ``resume`` continue) a run in ``out_dir``; returns the per-epoch metrics.

    ``init`` starts a new run from the weights of a checkpoint (fine-tuning: a fresh optimiser and
    learning-rate schedule); it must hold the same architecture, settings and front end. A resumed run
    continues from its own ``last.pt`` and ignores ``init``. Give a fine-tuning run another ``seed`` than
    the run it starts from, or it draws the same segments and degradations again.

    ``stop_after`` ends this call after that many epochs (the run can be resumed later). A NaN or
    infinite loss raises :class:`TrainingDiverged` and leaves the last good checkpoint in place.
    """
    out_dir = Path(out_dir)
    dev = setup_distributed(device)
    rank, world, _ = _dist_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} ranks")
    local_batch = cfg.batch_size // world
    if len(source.train) < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training data ({len(source.train)} items)")
    steps_per_epoch = len(source.train) // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    run_params = {k: v for k, v in (run_params or {}).items() if k != "resume"}  # how it was run, not what

    torch.manual_seed(cfg.seed)
    model, settings = build_model(cfg.model, fe, **cfg.model_settings)
    objective = variant(cfg.model).objective or contrastive
    if init is not None and not (resume and (out_dir / runs.LAST).exists()):
        _load_init(model, settings, fe, cfg.model, init)
    model.to(dev)
    optimizer = make_optimizer(cfg.optim, model, cfg.scaled_lr(), cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, int(cfg.warmup_frac * total_steps)))
    use_amp = cfg.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    history: list[dict] = []
    start_epoch, best, stale = 0, -1.0, 0
    last_path, best_path, log_path = out_dir / runs.LAST, out_dir / runs.BEST, out_dir / runs.METRICS_LOG
    if rank == 0:
        storage.clean_stale_temps(out_dir)  # what killed writes left behind
    if resume and last_path.exists():
        before = storage.read_json(out_dir / runs.TRAIN_CONFIG) if (out_dir / runs.TRAIN_CONFIG).exists() else {}
        if before.get("train", to_dict(cfg)) != to_dict(cfg) or before.get("frontend", fe.to_dict()) != fe.to_dict():
            changed = sorted(k for k, v in to_dict(cfg).items() if before.get("train", {}).get(k) != v)
            raise ValueError(f"{out_dir}: holds a run with other settings (changed: {changed or ['front end']}); "
                             f"use another folder to start a new run")
        ck = load_checkpoint(last_path, dev)
        if ck["model_name"] != cfg.model or ck["frontend"] != fe.to_dict():
            raise ValueError(f"{last_path}: made for model {ck['model_name']} / front end {ck['frontend']}, "
                             f"not {cfg.model} / {fe.to_dict()}")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_cpu"].cpu())
        start_epoch, best, stale = ck["epoch"] + 1, ck["best_val_top1"], ck["stale_epochs"]
        run_params = ck.get("params", run_params)  # the run keeps the parameters it was started with
        history = _history_until(storage.read_jsonl(log_path), ck)
        if rank == 0:
            _finish_epoch(out_dir, ck, history)
    elif rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if log_path.exists() or last_path.exists():
            if not resume:
                raise FileExistsError(f"{out_dir}: holds a training run; resume it or choose another folder")
        if resume and (out_dir / runs.TRAIN_CONFIG).exists():  # started before, killed before its first epoch ended
            before = storage.read_json(out_dir / runs.TRAIN_CONFIG)
            if before.get("train") == to_dict(cfg) and before.get("frontend") == fe.to_dict():
                run_params = before.get("params", run_params)
        storage.write_json(out_dir / runs.TRAIN_CONFIG, {"train": to_dict(cfg), "frontend": fe.to_dict(),
                                                     "model_settings": settings, "params": run_params or {}})

    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if world > 1:
        ddp.train()
    model.train()
    epochs_run = 0
    for epoch in range(start_epoch, cfg.epochs):
        if stop_after is not None and epochs_run >= stop_after:
            break
        if stale >= cfg.patience:
            break
        t0 = time.time()
        if hasattr(source.train, "set_epoch"):
            source.train.set_epoch(epoch)
        sampler = DistributedSampler(source.train, world, rank, shuffle=True, seed=cfg.seed, drop_last=True) \
            if world > 1 else None
        if sampler is not None:
            sampler.set_epoch(epoch)
        order = torch.Generator().manual_seed(int(item_rng(cfg.seed, "order", epoch).integers(2**62)))
        loader = DataLoader(source.train, batch_size=local_batch, shuffle=sampler is None, sampler=sampler,
                            generator=order if sampler is None else None, drop_last=True,
                            num_workers=cfg.num_workers, collate_fn=source.collate,
                            worker_init_fn=worker_init_fn if cfg.num_workers else None,
                            pin_memory=dev.type == "cuda", persistent_workers=False)
        losses, wait, n_pairs = [], 0.0, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or rank > 0,
                   leave=False)
        t_fetch = time.time()
        for step, b in enumerate(loader):
            if step >= steps_per_epoch:
                break
            g = torch.Generator().manual_seed(int(item_rng(cfg.seed, "augment", epoch, step, rank).integers(2**62)))
            xa, xb = source.batches(b, dev, g)
            wait += time.time() - t_fetch
            if world > 1:  # items left out (songs that failed to decode): every rank takes as many pairs
                n_ok = torch.tensor([xa.shape[0]], device=dev)
                dist.all_reduce(n_ok, op=dist.ReduceOp.MIN)
                xa, xb = xa[: int(n_ok)], xb[: int(n_ok)]
            if xa.shape[0] < 2:  # no negatives left in this batch: no step, the schedule goes on
                scheduler.step()
                bar.update(1)
                t_fetch = time.time()
                continue
            with torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext():
                loss, _, _ = objective(ddp, model, xa, xb, cfg.temperature)
            loss = loss.float()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped. The last good "
                    f"checkpoint is {last_path if last_path.exists() else '(none yet)'}; lower the learning rate "
                    f"(now {cfg.scaled_lr():.3g}) or enable grad_clip")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
            n_pairs += xa.shape[0] * world
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.update(1)
            t_fetch = time.time()
        bar.close()
        train_s = time.time() - t0
        val = evaluate(model, source, dev, max(local_batch, 2), cfg.temperature, cfg.model) if rank == 0 else {}
        improved = rank == 0 and val["val_top1"] > best
        if rank == 0:
            best, stale = (val["val_top1"], 0) if improved else (best, stale + 1)
        if world > 1:  # every rank must agree on early stopping, and hold the same weights
            flags = torch.tensor([best, float(stale)], device=dev)
            dist.broadcast(flags, 0)
            best, stale = float(flags[0]), int(flags[1])
            checksum = _weights_checksum(model).to(dev)
            sums = [torch.zeros_like(checksum) for _ in range(world)]
            dist.all_gather(sums, checksum)
            if any(not torch.equal(s, sums[0]) for s in sums):
                raise RuntimeError(f"ranks hold different weights after epoch {epoch + 1}: {[float(s) for s in sums]}")
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), **val,
                  "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - t0, 2),
                  "pairs_per_s": round(n_pairs / max(train_s, 1e-9), 1),
                  "data_wait_frac": round(wait / max(train_s, 1e-9), 3), "best": bool(improved)}
        if world > 1:
            record["weights_checksum"] = float(checksum)
        history.append(record)
        if rank == 0:
            state = {"model": model.state_dict(), "model_name": cfg.model, "model_settings": settings,
                     "frontend": fe.to_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                     "rng_cpu": torch.get_rng_state(), "best_val_top1": best, "stale_epochs": stale,
                     "train_config": to_dict(cfg), "params": run_params or {}, "metrics": record}
            save_checkpoint(last_path, state)  # the epoch is done once this is written (see the docstring)
            if improved:
                save_checkpoint(best_path, state)
            storage.append_jsonl(log_path, record)
            if progress:
                print(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}, val loss {val['val_loss']:.4f}, "
                      f"val top-1 {val['val_top1']:.3f}{' (best)' if improved else ''}, "
                      f"{record['pairs_per_s']:.0f} pairs/s", flush=True)
        epochs_run += 1
    if world > 1:
        dist.barrier()
    return history


def _load_init(model: torch.nn.Module, settings: dict, fe: FrontEnd, name: str, init: str | os.PathLike) -> None:
    """Copy the weights of checkpoint ``init`` into ``model`` (float32), or ValueError naming what differs."""
    ck = load_checkpoint(init)
    for key, want in (("model_name", name), ("model_settings", settings), ("frontend", fe.to_dict())):
        if key not in ck:
            raise ValueError(f"{init}: not an fplib model checkpoint (no {key!r})")
        if ck[key] != want:
            raise ValueError(f"{init}: its {key} {ck[key]} differs from this run's {want}; fine-tuning starts "
                             f"from the same architecture and front end")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})


def _weights_checksum(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)


def _history_until(records: list[dict], ck: dict) -> list[dict]:
    """The metrics of epochs 0 .. ``ck``'s epoch, one each: a killed run may have logged the epoch after
    ``last.pt`` or not have logged ``last.pt``'s own; the checkpoint holds its own epoch's record."""
    by_epoch = {}
    for r in records:
        if r.get("epoch", -1) <= ck["epoch"]:
            by_epoch.setdefault(r["epoch"], r)
    if "metrics" in ck:
        by_epoch[ck["epoch"]] = ck["metrics"]
    return [by_epoch[e] for e in sorted(by_epoch)]


def _finish_epoch(out_dir: Path, ck: dict, history: list[dict]) -> None:
    """Write what the end of ``ck``'s epoch writes after ``last.pt``, where a killed run did not: ``best.pt``
    (the same state as ``last.pt`` when that epoch was the best) and the metrics log."""
    last_path, best_path, log_path = out_dir / runs.LAST, out_dir / runs.BEST, out_dir / runs.METRICS_LOG
    if ck.get("metrics", {}).get("best") and (
            not best_path.exists() or storage.file_checksum(best_path) != storage.file_checksum(last_path)):
        import shutil

        with storage.atomic_path(best_path) as tmp:
            shutil.copyfile(last_path, tmp)
    if storage.read_jsonl(log_path) != history or not _ends_with_newline(log_path):
        _rewrite_jsonl(log_path, history)


def _ends_with_newline(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _rewrite_jsonl(path: Path, records: list[dict]) -> None:
    with storage.atomic_path(path) as tmp:
        for r in records:
            storage.append_jsonl(tmp, r)


def nearest_neighbours(model: torch.nn.Module, source, device: str | torch.device = "cpu", n: int = 4, k: int = 3,
                       batch: int = 64) -> dict[str, torch.Tensor]:
    """For the first ``n`` degraded validation windows, the ``k`` nearest clean validation windows.

    Returns ``queries [n, 1, F, T]``, ``neighbours [n, k, 1, F, T]`` (log-mels), ``scores [n, k]``
    (similarities as searched: inner products, or Hamming similarity of binary codes) and ``index [n, k]``
    (row i's true match is clean window i).
    """
    model.eval()
    clean, degraded, za, zb = [], [], [], []
    with torch.no_grad():
        for xa, xb in source.val_pairs(torch.device(device), batch):
            clean.append(xa.cpu())
            degraded.append(xb.cpu())
            za.append(model(xa).float().cpu())
            zb.append(model(xb).float().cpu())
    clean, degraded, za, zb = map(torch.cat, (clean, degraded, za, zb))
    n = min(n, len(zb))
    sims = codes.torch_similarity_matrix(zb[:n], za, kind_of_model(model))
    scores, index = sims.topk(min(k, len(za)), dim=1)
    return {"queries": degraded[:n], "neighbours": clean[index], "scores": scores, "index": index}


def best_epoch(history: list[dict]) -> tuple[int, dict]:
    """The epoch whose weights ``best.pt`` holds, counted from 1 as the progress log and the plots
    count (``metrics.jsonl`` stores ``epoch`` from 0), and its record: the last epoch flagged
    ``best`` (a strict improvement of the validation hit rate), else the first with the highest one."""
    if not history:
        raise ValueError("no epochs in the history")
    flagged = [h for h in history if h.get("best")]
    record = flagged[-1] if flagged else max(history, key=lambda h: h["val_top1"])
    return record["epoch"] + 1, record


# A run "learned" when its best validation top-1 is at least this many times chance (1 / validation
# pairs: a random embedding ranks the right clean window first among all of them once in that many).
LEARNED_OVER_CHANCE = 3.0


def times_chance(record: dict) -> float:
    """An epoch record's validation top-1 as a multiple of chance (``val_top1 x val_pairs``)."""
    return float(record["val_top1"]) * int(record["val_pairs"])


def learned(record: dict) -> bool:
    """Whether an epoch record (e.g. :func:`best_epoch`'s, or a checkpoint's ``metrics``) shows retrieval
    well above chance: validation top-1 at least :data:`LEARNED_OVER_CHANCE` times chance."""
    return times_chance(record) >= LEARNED_OVER_CHANCE


def read_metrics(out_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch metrics of a run (``metrics.jsonl``)."""
    path = Path(out_dir) / runs.METRICS_LOG
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training metrics (has the run started?)")
    return storage.read_jsonl(path)



def split_online_data(songs: str | os.PathLike, irs: str | os.PathLike, noises: str | os.PathLike,
                      out: str | os.PathLike, train_ratio: float = 0.8, seed: int = 0) -> dict[str, Path]:
    """The original ``dynamic_online`` split: ``out/online_data/{train,val}/{train,val}_{set,impulse_responses,
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
            raise FileExistsError(f"{root}: holds a different split (other files in {', '.join(changed)}); "
                                  f"remove it or choose another output path")
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
    manifest = {f"{name.split('_')[0]}/{name}": sorted(str(p.resolve()) for p in audio.list_audio(folder))
                for name, folder in folders.items()}
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
