"""Contrastive training of a fingerprinter: the loop, and the ``trainer`` command's work.

What it reads comes from :mod:`fplib.sources` (pairs on disk, or songs degraded on the fly); its settings
are a :class:`fplib.train_config.TrainConfig`, whose family settings come from the model's registry entry.

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

Several GPUs or machines: run the same entry point under ``torchrun``. ``batch_size`` is the global
batch: each of the W ranks takes ``batch_size / W`` pairs, and NT-Xent gathers the embeddings of all
ranks, so every anchor sees the negatives of the whole global batch, exactly as one process would.

:func:`train_variant` trains another registered family beside a run's main model (notebook 03), and
:func:`run_trainer` is the whole ``trainer`` command (its three modes, torchrun, ``OUT/NAME.pt``).
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from fplib import codes, runs, storage
from fplib.checkpoints import load_checkpoint, save_checkpoint
from fplib.config import to_dict
from fplib.data import item_rng, worker_init_fn
from fplib.errors import BadFileError
from fplib.features import FrontEnd
from fplib.losses import contrastive
from fplib.models.registry import build_model, kind_of_model, variant
from fplib.optim import make_optimizer, warmup_cosine
from fplib.sources import (
    OnlineSource,
    StaticSource,
)
from fplib.train_config import TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def setup_distributed(device: str = "auto") -> torch.device:
    """Initialise torch.distributed when launched by torchrun (NCCL on GPUs, Gloo on CPU); pick the device."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    _, _, local = dist_info()
    if use_cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu" if device == "auto" else device)


def evaluate(
    model: torch.nn.Module, source, device: torch.device, batch: int, temperature: float, model_name: str | None = None
) -> dict[str, float]:
    """Validation, the same for every family: the family's training objective (mean over batches) and
    the top-1 hit rate of each degraded window among all clean validation windows, compared as the
    fingerprints will be stored and searched (inner product, or Hamming similarity of binary codes)."""
    if model_name:
        objective, kind = variant(model_name).objective_fn(), variant(model_name).kind
    else:  # a module outside the registry
        objective, kind = contrastive, "float"
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


# -- the loop, step by step ---------------------------------------------------------------------


@dataclass
class _Loop:
    """One call of :func:`train`: where it runs, what it trains, and how far the run has come."""

    cfg: TrainConfig
    fe: FrontEnd
    out_dir: Path
    dev: torch.device
    rank: int
    world: int
    local_batch: int
    steps_per_epoch: int
    model: torch.nn.Module
    settings: dict
    objective: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype
    run_params: dict
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best: float = -1.0
    stale: int = 0

    @property
    def last_path(self) -> Path:
        return self.out_dir / runs.LAST

    @property
    def best_path(self) -> Path:
        return self.out_dir / runs.BEST

    @property
    def log_path(self) -> Path:
        return self.out_dir / runs.METRICS_LOG


def _prepare(
    cfg: TrainConfig,
    source,
    out_dir: Path,
    fe: FrontEnd,
    device: str,
    run_params: dict | None,
    init: str | os.PathLike | None,
    resume: bool,
) -> _Loop:
    """Check the batch against the ranks and the data, then build the model (seeded; from ``init``'s weights
    for a new fine-tuning run), its optimiser, schedule and mixed-precision scaler."""
    dev = setup_distributed(device)
    rank, world, _ = dist_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} ranks")
    if len(source.train) < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training data ({len(source.train)} items)")
    steps_per_epoch = len(source.train) // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    torch.manual_seed(cfg.seed)
    model, settings = build_model(cfg.model, fe, **cfg.model_settings)
    if init is not None and not (resume and (out_dir / runs.LAST).exists()):
        _load_init(model, settings, fe, cfg.model, init)
    model.to(dev)
    optimizer = make_optimizer(cfg.optim, model, cfg.scaled_lr(), cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, int(cfg.warmup_frac * total_steps))
    )
    use_amp = cfg.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    run_params = {k: v for k, v in (run_params or {}).items() if k != "resume"}  # how it was run, not what
    return _Loop(
        cfg,
        fe,
        out_dir,
        dev,
        rank,
        world,
        cfg.batch_size // world,
        steps_per_epoch,
        model,
        settings,
        variant(cfg.model).objective_fn(),
        optimizer,
        scheduler,
        scaler,
        use_amp,
        amp_dtype,
        run_params,
    )


# what resuming reads from last.pt (train._save_epoch writes these and more)
_RESUME_KEYS = (
    "model",
    "model_name",
    "frontend",
    "optimizer",
    "scheduler",
    "scaler",
    "rng_cpu",
    "epoch",
    "best_val_top1",
    "stale_epochs",
)


def _start_or_resume(run: _Loop, resume: bool) -> None:
    """Continue from ``last.pt`` (refusing other settings), or start: write ``config.json`` (refusing a folder
    that holds a run unless resuming)."""
    cfg, fe, out_dir = run.cfg, run.fe, run.out_dir
    if run.rank == 0:
        storage.clean_stale_temps(out_dir)  # what killed writes left behind
    if resume and run.last_path.exists():
        before = storage.read_json(out_dir / runs.TRAIN_CONFIG) if (out_dir / runs.TRAIN_CONFIG).exists() else {}
        if before.get("train", to_dict(cfg)) != to_dict(cfg) or before.get("frontend", fe.to_dict()) != fe.to_dict():
            changed = sorted(k for k, v in to_dict(cfg).items() if before.get("train", {}).get(k) != v)
            raise ValueError(
                f"{out_dir}: holds a run with other settings (changed: {changed or ['front end']}); "
                f"use another folder to start a new run"
            )
        ck = load_checkpoint(run.last_path, run.dev)
        missing = [k for k in _RESUME_KEYS if not isinstance(ck, dict) or k not in ck]
        if missing:
            raise BadFileError(
                run.last_path,
                f"not an fplib training checkpoint (no {', '.join(map(repr, missing))}): this run cannot be "
                f"resumed from it; start it in another folder",
            )
        if ck["model_name"] != cfg.model or ck["frontend"] != fe.to_dict():
            raise ValueError(
                f"{run.last_path}: made for model {ck['model_name']} / front end {ck['frontend']}, "
                f"not {cfg.model} / {fe.to_dict()}"
            )
        run.model.load_state_dict(ck["model"])
        run.optimizer.load_state_dict(ck["optimizer"])
        run.scheduler.load_state_dict(ck["scheduler"])
        run.scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_cpu"].cpu())
        run.start_epoch, run.best, run.stale = ck["epoch"] + 1, ck["best_val_top1"], ck["stale_epochs"]
        run.run_params = ck.get("params", run.run_params)  # the run keeps the parameters it was started with
        run.history = _history_until(storage.read_jsonl(run.log_path), ck)
        if run.rank == 0:
            _finish_epoch(out_dir, ck, run.history)
    elif run.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if run.log_path.exists() or run.last_path.exists():
            if not resume:
                raise FileExistsError(f"{out_dir}: holds a training run; resume it or choose another folder")
        if resume and (out_dir / runs.TRAIN_CONFIG).exists():  # started before, killed before its first epoch ended
            before = storage.read_json(out_dir / runs.TRAIN_CONFIG)
            if before.get("train") == to_dict(cfg) and before.get("frontend") == fe.to_dict():
                run.run_params = before.get("params", run.run_params)
        storage.write_json(
            out_dir / runs.TRAIN_CONFIG,
            {"train": to_dict(cfg), "frontend": fe.to_dict(), "model_settings": run.settings, "params": run.run_params},
        )


def _loader(run: _Loop, source, epoch: int) -> DataLoader:
    """The epoch's batches: a seeded shuffle (one rank), or the epoch's share of a DistributedSampler."""
    cfg = run.cfg
    if hasattr(source.train, "set_epoch"):
        source.train.set_epoch(epoch)
    sampler = (
        DistributedSampler(source.train, run.world, run.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        if run.world > 1
        else None
    )
    if sampler is not None:
        sampler.set_epoch(epoch)
    order = torch.Generator().manual_seed(int(item_rng(cfg.seed, "order", epoch).integers(2**62)))
    return DataLoader(
        source.train,
        batch_size=run.local_batch,
        shuffle=sampler is None,
        sampler=sampler,
        generator=order if sampler is None else None,
        drop_last=True,
        num_workers=cfg.num_workers,
        collate_fn=source.collate,
        worker_init_fn=worker_init_fn if cfg.num_workers else None,
        pin_memory=run.dev.type == "cuda",
        persistent_workers=False,
    )


def _train_epoch(
    run: _Loop, ddp: torch.nn.Module, source, epoch: int, progress: bool
) -> tuple[list[float], float, int]:
    """One epoch of steps; returns the step losses, the seconds spent waiting for data and the pairs seen."""
    cfg, dev, world = run.cfg, run.dev, run.world
    losses, wait, n_pairs = [], 0.0, 0
    bar = tqdm(
        total=run.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress or run.rank > 0,
        leave=False,
    )
    t_fetch = time.time()
    for step, b in enumerate(_loader(run, source, epoch)):
        if step >= run.steps_per_epoch:
            break
        g = torch.Generator().manual_seed(int(item_rng(cfg.seed, "augment", epoch, step, run.rank).integers(2**62)))
        xa, xb = source.batches(b, dev, g)
        wait += time.time() - t_fetch
        if world > 1:  # items left out (songs that failed to decode): every rank takes as many pairs
            n_ok = torch.tensor([xa.shape[0]], device=dev)
            dist.all_reduce(n_ok, op=dist.ReduceOp.MIN)
            xa, xb = xa[: int(n_ok)], xb[: int(n_ok)]
        if xa.shape[0] >= 2:  # else no negatives are left in this batch: no step, the schedule goes on
            losses.append(_step(run, ddp, xa, xb, epoch, step))
            n_pairs += xa.shape[0] * world
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        else:
            run.scheduler.step()
        bar.update(1)
        t_fetch = time.time()
    bar.close()
    return losses, wait, n_pairs


def _step(run: _Loop, ddp: torch.nn.Module, xa: torch.Tensor, xb: torch.Tensor, epoch: int, step: int) -> float:
    """One optimiser step on a batch of pairs; its loss, or :class:`TrainingDiverged`."""
    cfg = run.cfg
    with torch.autocast("cuda", dtype=run.amp_dtype) if run.use_amp else nullcontext():
        loss, _, _ = run.objective(ddp, run.model, xa, xb, cfg.temperature)
    loss = loss.float()
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped. The last good "
            f"checkpoint is {run.last_path if run.last_path.exists() else '(none yet)'}; lower the learning rate "
            f"(now {cfg.scaled_lr():.3g}) or enable grad_clip"
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if cfg.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.item()


def _validate(run: _Loop, source, epoch: int) -> tuple[dict, bool, torch.Tensor | None]:
    """Rank 0 validates; every rank then agrees on the best hit rate and the patience left, and checks that
    all ranks hold the same weights. Returns the validation metrics, whether the epoch improved on the best,
    and the weights' checksum (several ranks only)."""
    cfg = run.cfg
    val = (
        evaluate(run.model, source, run.dev, max(run.local_batch, 2), cfg.temperature, cfg.model)
        if run.rank == 0
        else {}
    )
    improved = run.rank == 0 and val["val_top1"] > run.best
    if run.rank == 0:
        run.best, run.stale = (val["val_top1"], 0) if improved else (run.best, run.stale + 1)
    checksum = None
    if run.world > 1:  # every rank must agree on early stopping, and hold the same weights
        flags = torch.tensor([run.best, float(run.stale)], device=run.dev)
        dist.broadcast(flags, 0)
        run.best, run.stale = float(flags[0]), int(flags[1])
        checksum = _weights_checksum(run.model).to(run.dev)
        sums = [torch.zeros_like(checksum) for _ in range(run.world)]
        dist.all_gather(sums, checksum)
        if any(not torch.equal(s, sums[0]) for s in sums):
            raise RuntimeError(f"ranks hold different weights after epoch {epoch + 1}: {[float(s) for s in sums]}")
    return val, improved, checksum


def _save_epoch(run: _Loop, epoch: int, record: dict, improved: bool, progress: bool) -> None:
    """Rank 0: ``last.pt`` (the epoch is done once it is written), ``best.pt`` if improved, the metrics line."""
    state = {
        "model": run.model.state_dict(),
        "model_name": run.cfg.model,
        "model_settings": run.settings,
        "frontend": run.fe.to_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": epoch,
        "rng_cpu": torch.get_rng_state(),
        "best_val_top1": run.best,
        "stale_epochs": run.stale,
        "train_config": to_dict(run.cfg),
        "params": run.run_params or {},
        "metrics": record,
    }
    save_checkpoint(run.last_path, state)  # the epoch is done once this is written (see the module docstring)
    if improved:
        save_checkpoint(run.best_path, state)
    storage.append_jsonl(run.log_path, record)
    if progress:
        print(
            f"epoch {epoch + 1}: loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val top-1 {record['val_top1']:.3f}{' (best)' if improved else ''}, "
            f"{record['pairs_per_s']:.0f} pairs/s",
            flush=True,
        )


def train(
    cfg: TrainConfig,
    source: StaticSource | OnlineSource,
    out_dir: str | os.PathLike,
    fe: FrontEnd,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    run_params: dict | None = None,
    init: str | os.PathLike | None = None,
) -> list[dict]:
    """Train (or with ``resume`` continue) a run in ``out_dir``; returns the per-epoch metrics.

    ``init`` starts a new run from the weights of a checkpoint (fine-tuning: a fresh optimiser and
    learning-rate schedule); it must hold the same architecture, settings and front end. A resumed run
    continues from its own ``last.pt`` and ignores ``init``. Give a fine-tuning run another ``seed`` than
    the run it starts from, or it draws the same segments and degradations again.

    ``stop_after`` ends this call after that many epochs (the run can be resumed later). A NaN or
    infinite loss raises :class:`TrainingDiverged` and leaves the last good checkpoint in place.
    """
    run = _prepare(cfg, source, Path(out_dir), fe, device, run_params, init, resume)
    _start_or_resume(run, resume)
    ddp = torch.nn.parallel.DistributedDataParallel(run.model) if run.world > 1 else run.model
    if run.world > 1:
        ddp.train()
    run.model.train()
    for epochs_run, epoch in enumerate(range(run.start_epoch, cfg.epochs)):
        if (stop_after is not None and epochs_run >= stop_after) or run.stale >= cfg.patience:
            break
        t0 = time.time()
        losses, wait, n_pairs = _train_epoch(run, ddp, source, epoch, progress)
        train_s = time.time() - t0
        val, improved, checksum = _validate(run, source, epoch)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            **val,
            "lr": run.scheduler.get_last_lr()[0],
            "seconds": round(time.time() - t0, 2),
            "pairs_per_s": round(n_pairs / max(train_s, 1e-9), 1),
            "data_wait_frac": round(wait / max(train_s, 1e-9), 3),
            "best": bool(improved),
        }
        if checksum is not None:
            record["weights_checksum"] = float(checksum)
        run.history.append(record)
        if run.rank == 0:
            _save_epoch(run, epoch, record, improved, progress)
    if run.world > 1:
        dist.barrier()
    return run.history


def _load_init(model: torch.nn.Module, settings: dict, fe: FrontEnd, name: str, init: str | os.PathLike) -> None:
    """Copy the weights of checkpoint ``init`` into ``model`` (float32), or ValueError naming what differs."""
    ck = load_checkpoint(init)
    for key, want in (("model_name", name), ("model_settings", settings), ("frontend", fe.to_dict())):
        if key not in ck:
            raise ValueError(f"{init}: not an fplib model checkpoint (no {key!r})")
        if ck[key] != want:
            raise ValueError(
                f"{init}: its {key} {ck[key]} differs from this run's {want}; fine-tuning starts "
                f"from the same architecture and front end"
            )
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
        not best_path.exists() or storage.file_checksum(best_path) != storage.file_checksum(last_path)
    ):
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


def nearest_neighbours(
    model: torch.nn.Module, source, device: str | torch.device = "cpu", n: int = 4, k: int = 3, batch: int = 64
) -> dict[str, torch.Tensor]:
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
