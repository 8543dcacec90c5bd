import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fplib import cli, storage
from fplib.augment import AugmentConfig
from fplib.checkpoints import load_checkpoint, load_model
from fplib.data import Skipped
from fplib.engine import torch_threads
from fplib.features import FrontEnd
from fplib.losses import nt_xent
from fplib.sources import OnlineFolders, online_source, split_online_data, static_source
from fplib.train import TrainingDiverged, best_epoch, read_metrics, train
from fplib.train_config import TrainConfig
from tests import learning
from tests.helpers import make_folders

FE = FrontEnd()
TINY = dict(model="nafp_small", model_settings={"width": 0.125}, batch_size=8, lr=1e-3, lr_ref_batch=8, epochs=3)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return learning.static_pairs(tmp_path_factory.mktemp("pairs"))


def test_best_epoch_counts_from_one_like_the_log():
    hist = [
        {"epoch": 0, "val_top1": 0.2, "best": True},
        {"epoch": 1, "val_top1": 0.5, "best": True},
        {"epoch": 2, "val_top1": 0.5, "best": False},
        {"epoch": 3, "val_top1": 0.4, "best": False},
    ]
    assert best_epoch(hist) == (2, hist[1])  # the log printed "epoch 2: ... (best)"
    unflagged = [{k: v for k, v in h.items() if k != "best"} for h in hist]
    assert best_epoch(unflagged)[0] == 2  # the first of the tied best
    with pytest.raises(ValueError):
        best_epoch([])


@pytest.mark.slow
def test_static_training_writes_usable_checkpoints(pairs, tmp_path):
    cfg = TrainConfig(**learning.TINY_TRAINING)
    with torch_threads(learning.THREADS):  # a fixed thread count: the curve depends on it
        hist = train(
            cfg, static_source(pairs / "train_set", pairs / "val_set", FE), tmp_path / "run", FE, progress=False
        )
    assert [h["epoch"] for h in hist] == list(range(cfg.epochs))
    assert all(np.isfinite(h["train_loss"]) for h in hist)
    # it learns: over six epochs the training loss falls about 14-40-fold (2.4 -> 0.06-0.17 with seeds 0 and 1);
    # with no update at all it stays where it started. (The validation loss and val_top1 say little here: 4
    # validation pairs, see tests/learning.py.) The same check runs under other CPU kernels, thread counts and
    # seeds in benchmarks/portability.py.
    learning.require(learning.loss_curve(hist))
    assert hist[-1]["lr"] < hist[0]["lr"]  # cosine decay over the run's real length
    assert read_metrics(tmp_path / "run") == hist
    for name in ("best.pt", "last.pt", "config.json"):
        assert (tmp_path / "run" / name).exists()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["epoch"] == cfg.epochs - 1 and ck["model_name"] == "nafp_small" and ck["frontend"] == FE.to_dict()
    assert {"optimizer", "scheduler", "rng_cpu", "train_config", "model_settings"} <= set(ck)
    n, record = best_epoch(hist)  # counted from 1, and it is the epoch best.pt holds
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] + 1 == n and record["best"]
    model, fe = load_model(tmp_path / "run" / "best.pt")
    with torch.no_grad():
        z = model(torch.randn(2, 1, 256, 32))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    with pytest.raises(FileExistsError, match="holds a training run"):
        train(cfg, static_source(pairs / "train_set", pairs / "val_set", FE), tmp_path / "run", FE, progress=False)


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_curve(pairs, tmp_path):
    src = static_source(pairs / "train_set", pairs / "val_set", FE)
    full = train(TrainConfig(**TINY), src, tmp_path / "a", FE, progress=False)
    part = train(TrainConfig(**TINY), src, tmp_path / "b", FE, progress=False, stop_after=1)
    assert len(part) == 1
    resumed = train(TrainConfig(**TINY), src, tmp_path / "b", FE, progress=False, resume=True)
    keys = ("epoch", "train_loss", "val_loss", "val_top1", "lr")
    assert [[h[k] for k in keys] for h in resumed] == [[h[k] for k in keys] for h in full]
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow
def test_init_starts_a_new_run_from_trained_weights(pairs, tmp_path):
    src = static_source(pairs / "train_set", pairs / "val_set", FE)
    train(TrainConfig(**TINY), src, tmp_path / "a", FE, progress=False)
    trained = load_checkpoint(tmp_path / "a" / "best.pt")["model"]
    # a learning rate of ~0: the fine-tuned weights are the ones it started from, not a fresh draw
    still = {**TINY, "lr": 1e-12, "epochs": 1, "seed": 1}
    train(TrainConfig(**still), src, tmp_path / "b", FE, progress=False, init=tmp_path / "a" / "best.pt")
    train(TrainConfig(**still), src, tmp_path / "c", FE, progress=False)
    b, c = load_checkpoint(tmp_path / "b" / "last.pt")["model"], load_checkpoint(tmp_path / "c" / "last.pt")["model"]
    conv = next(k for k in trained if k.endswith("weight") and trained[k].dim() == 4)
    torch.testing.assert_close(b[conv], trained[conv], atol=1e-6, rtol=0)
    assert (c[conv] - trained[conv]).abs().max() > 1e-3
    # the checkpoint must hold the same architecture and settings
    wide = {**TINY, "model_settings": {"width": 0.25}, "epochs": 1}
    with pytest.raises(ValueError, match="model_settings"):
        train(TrainConfig(**wide), src, tmp_path / "d", FE, progress=False, init=tmp_path / "a" / "best.pt")
    with pytest.raises(FileNotFoundError):
        train(TrainConfig(**still), src, tmp_path / "e", FE, progress=False, init=tmp_path / "missing.pt")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(pairs, tmp_path):
    src = static_source(pairs / "train_set", pairs / "val_set", FE)
    train(TrainConfig(**TINY), src, tmp_path / "run", FE, progress=False, stop_after=1)
    good = load_checkpoint(tmp_path / "run" / "last.pt")
    bad = storage.load_array(src.train.files[0])
    bad[1, 3, 4] = np.nan
    for i in range(len(src.train.files)):  # every pair poisoned: the next step must diverge
        src.train.files[i] = tmp_path / f"nan_{i}.npy"
        storage.save_array(src.train.files[i], bad)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2.*last.pt"):
        train(TrainConfig(**TINY), src, tmp_path / "run", FE, progress=False, resume=True)
    after = load_checkpoint(tmp_path / "run" / "last.pt")
    assert after["epoch"] == good["epoch"] == 0
    assert all(torch.equal(after["model"][k], good["model"][k]) for k in good["model"])


def test_bad_inputs_fail_before_any_work(pairs, tmp_path):
    src = static_source(pairs / "train_set", pairs / "val_set", FE)
    with pytest.raises(ValueError, match="larger than the training data"):
        train(TrainConfig(**{**TINY, "batch_size": 4096}), src, tmp_path / "run", FE, progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="notebook 01_generate_dataset"):
        static_source(tmp_path / "nope", pairs / "val_set", FE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npy pairs"):
        static_source(tmp_path / "empty", pairs / "val_set", FE)
    with pytest.raises(ValueError, match="front end"):
        static_source(pairs / "train_set", pairs / "val_set", FrontEnd(f_min=0.0))
    with pytest.raises(FileNotFoundError, match="validation noises: .*folder not found"):
        d = make_folders(tmp_path / "in", n_songs=3)
        online_source(
            OnlineFolders(d["songs"], d["songs"], d["rir"], d["noise"], d["rir"], tmp_path / "missing"),
            TrainConfig(**TINY),
            AugmentConfig(),
            FE,
            Skipped(),
        )


def test_unsafe_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a loadable fplib checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.slow
def test_dynamic_training_with_online_augmentation(tmp_path):
    d = make_folders(tmp_path / "in", n_songs=6, seconds=6.0)
    (d["songs"] / "broken.wav").write_text("nope")
    split = split_online_data(d["songs"], d["rir"], d["noise"], tmp_path, 0.7, seed=0)
    assert split["train_set"].is_dir() and split["val_background_noises"].is_dir()
    linked = list(split["train_set"].iterdir())
    assert linked and all(p.is_symlink() for p in linked)  # audio is linked, not copied
    assert split_online_data(d["songs"], d["rir"], d["noise"], tmp_path, 0.7, seed=0) == split  # reused
    with pytest.raises(FileExistsError, match="different split"):
        split_online_data(d["songs"], d["rir"], d["noise"], tmp_path, 0.5, seed=0)
    skipped = Skipped()
    cfg = TrainConfig(**{**TINY, "epochs": 2, "items_per_song": 4})
    src = online_source(OnlineFolders.from_split(split), cfg, AugmentConfig(), FE, skipped)
    assert any("broken.wav" in p for p, _ in skipped.items)
    hist = train(cfg, src, tmp_path / "run", FE, progress=False)
    assert len(hist) == 2 and all(0 <= h["data_wait_frac"] <= 1 for h in hist)
    assert hist[0]["val_pairs"] == len(src.val)


@pytest.mark.slow
def test_trainer_cli_keeps_the_seed_flags(pairs, tmp_path, capsys):
    ns = cli._trainer_parser().parse_args(["static", "-tp", "a", "-vp", "b"])
    assert (ns.epochs, ns.batch_size, ns.optim, ns.output_path) == (200, None, None, ".")  # None: the family's
    ns = cli._trainer_parser().parse_args(["dynamic_online", "-p", "s", "-ir", "i", "-bn", "n"])
    assert ns.train_ratio == 0.8
    rc = cli.trainer_main(
        [
            "-ep",
            "1",
            "-bs",
            "8",
            "-m",
            "tiny",
            "--optim",
            "Lamb",
            "-o",
            str(tmp_path),
            "--arch",
            "nafp_small",
            "static",
            "-tp",
            str(pairs / "train_set"),
            "-vp",
            str(pairs / "val_set"),
        ]
    )
    assert rc == 0 and (tmp_path / "tiny.pt").exists() and (tmp_path / "tiny" / "last.pt").exists()
    assert cli.trainer_main(["-bs", "8", "-o", str(tmp_path), "static", "-tp", str(tmp_path / "x"), "-vp", "y"]) == 2
    assert "not found" in capsys.readouterr().err


def test_trainer_cli_online_with_preload_and_model_settings(tmp_path):
    d = make_folders(tmp_path / "in", n_songs=5, seconds=4.0)
    rc = cli.trainer_main(
        [
            "-ep",
            "1",
            "-bs",
            "4",
            "-m",
            "w",
            "-o",
            str(tmp_path),
            "--arch",
            "nafp_small",
            "--model_settings",
            '{"width": 0.125}',
            "--preload",
            "--workers",
            "0",
            "--items_per_song",
            "2",
            "--val_items_per_song",
            "3",
            "--no_amp",
            "dynamic_online",
            "-p",
            str(d["songs"]),
            "-ir",
            str(d["rir"]),
            "-bn",
            str(d["noise"]),
        ]
    )
    assert rc == 0
    ck = load_checkpoint(tmp_path / "w.pt")
    assert ck["model_settings"]["width"] == 0.125
    assert ck["train_config"]["preload"] and not ck["train_config"]["amp"]
    assert ck["train_config"]["val_items_per_song"] == 3 and ck["metrics"]["val_pairs"] == 3
    assert cli.trainer_main(["--model_settings", "{width", "dynamic_online", "-p", "s", "-ir", "i", "-bn", "n"]) == 2


# -- several processes (Gloo on CPU) -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _loss_worker(rank: int, world: int, port: int, za: torch.Tensor, zb: torch.Tensor, out: dict) -> None:
    _init(rank, world, port)
    n = za.shape[0] // world
    a = za[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    b = zb[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = nt_xent(a, b, 0.1)
    loss.backward()
    out[rank] = (float(loss), a.grad.clone(), b.grad.clone())
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_nt_xent_equals_the_global_batch():
    torch.manual_seed(0)
    za = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    zb = torch.nn.functional.normalize(za + 0.3 * torch.randn(8, 16), dim=1)
    a, b = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
    ref = nt_xent(a, b, 0.1)
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_loss_worker, args=(2, _free_port(), za, zb, out), nprocs=2, join=True)
    assert np.mean([out[r][0] for r in range(2)]) == pytest.approx(ref.item(), rel=1e-5)
    # each rank's gradient (which DDP then averages over the 2 ranks) is the global one, scaled by 2
    ga = torch.cat([out[r][1] for r in range(2)]) / 2
    gb = torch.cat([out[r][2] for r in range(2)]) / 2
    torch.testing.assert_close(ga, a.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(gb, b.grad, atol=1e-6, rtol=1e-4)


def _train_worker(rank: int, world: int, port: int, pairs_dir: str, out_dir: str, out: dict) -> None:
    _init(rank, world, port)
    src = static_source(f"{pairs_dir}/train_set", f"{pairs_dir}/val_set", FE)
    out[rank] = train(TrainConfig(**{**TINY, "epochs": 2}), src, out_dir, FE, progress=False, device="cpu")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_stay_in_sync(pairs, tmp_path):
    out = mp.Manager().dict()
    mp.spawn(_train_worker, args=(2, _free_port(), str(pairs), str(tmp_path / "ddp"), out), nprocs=2, join=True)
    assert len(out[0]) == len(out[1]) == 2
    # the same weights (train() also checks this itself every epoch) and learning rate on both ranks
    assert [h["weights_checksum"] for h in out[0]] == [h["weights_checksum"] for h in out[1]]
    assert [h["lr"] for h in out[0]] == [h["lr"] for h in out[1]]
    # rank 0 alone writes; its checkpoint holds the synchronised weights
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    total = sum(float(v.double().sum()) for k, v in ck["model"].items() if "running" not in k)
    assert total == pytest.approx(out[0][-1]["weights_checksum"], rel=1e-9)


def test_train_config_takes_every_family_setting_from_the_registry():
    from fplib.config import ParameterError, from_dict
    from fplib.models.registry import register, unregister, variant
    from fplib.train_config import default, family_settings, for_variant

    assert TrainConfig(model="attn_small").temperature == 0.1 and TrainConfig(model="nafp").temperature == 0.05
    assert TrainConfig(model="attn_small", temperature=0.2).temperature == 0.2  # given: not the family's
    base = TrainConfig(model="nafp")
    assert {k: getattr(base, k) for k in family_settings()} == family_settings()  # fplib's values
    try:
        register(
            "test_tuned",
            variant("nafp_small").factory,
            training={"lr": 0.01, "batch_size": 16, "optim": "Lamb"},
            width=0.125,
        )
        cfg = TrainConfig(model="test_tuned")
        assert (cfg.lr, cfg.batch_size, cfg.optim, cfg.temperature) == (0.01, 16, "Lamb", 0.05)
        assert from_dict(TrainConfig, {"model": "test_tuned", "lr": 0.5}).lr == 0.5
        moved = for_variant(cfg, "attn_small", epochs=1)  # the family's settings go back to the other family's
        assert (moved.model, moved.lr, moved.batch_size, moved.temperature, moved.epochs) == (
            "attn_small",
            1e-4,
            32,
            0.1,
            1,
        )
        register("test_bad", variant("nafp_small").factory, training={"no_such_setting": 1})
        with pytest.raises(ValueError, match="not family settings"):
            TrainConfig(model="test_bad")
    finally:
        unregister("test_tuned")
        unregister("test_bad")
    with pytest.raises(ParameterError, match="unknown parameter"):
        from_dict(TrainConfig, {"modle": "nafp"})
    # the command line takes its defaults from TrainConfig (one set of defaults)
    ns = cli._trainer_parser().parse_args(["static", "-tp", "a", "-vp", "b"])
    assert (ns.workers, ns.patience, ns.seed, ns.val_items_per_song, ns.arch) == (
        default("num_workers"),
        default("patience"),
        default("seed"),
        default("val_items_per_song"),
        default("model"),
    )
