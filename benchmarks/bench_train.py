"""Training and inference throughput of the fingerprinter on this machine, with references measured
in the same run (machines are noisy: compare ratios, not absolute figures).

1. Training pairs/s (forward + backward + Adam step on a batch of clean/degraded log-mel pairs) for
   the full NAFP model and the small variant.
2. Inference windows/s at batch 256 for the full model, next to
   - a reference of the same network whose divide-and-encode head is 128 separate small modules
     called in a Python loop (the original scripts' way), and
   - the machine's limit: its measured float32 matrix-multiply rate divided by NAFP's 0.607 GFLOPs
     per window (NAFP's own count), so we see how far from the hardware we are.
3. The online data pipeline alone (decode the needed segment, degrade on the device, log-mel), no
   model: pairs/s with 0, 1 and 2 DataLoader workers, on a synthetic demo corpus.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from fplib import audio, synth
from fplib.augment import Augmenter
from fplib.data import IRBank, NoiseBank, SegmentDataset, collate_segments, worker_init_fn
from fplib.losses import nt_xent
from fplib.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from reference import LoopNAFP  # noqa: E402

NAFP_GFLOPS_PER_WINDOW = 0.607


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_pairs_per_s(name: str, batch: int, repeat: int, device: torch.device) -> float:
    model, _ = build_model(name)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(2 * batch, 1, 256, 32, device=device)

    def step():
        z = model(x)
        loss = nt_xent(*z.chunk(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return batch / timed(step, repeat)


def infer_windows_per_s(model: nn.Module, batch: int, repeat: int, device: torch.device) -> float:
    model.to(device).eval()
    x = torch.randn(batch, 1, 256, 32, device=device)

    def run():
        with torch.inference_mode():
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return batch / timed(run, repeat)


def matmul_gflops(device: torch.device, n: int = 2048, repeat: int = 5) -> float:
    a = torch.randn(n, n, device=device)

    def run():
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 / timed(run, repeat) / 1e9


def pipeline_pairs_per_s(corpus: dict[str, Path], workers: int, batches: int, device: torch.device) -> float:
    aug = Augmenter()
    ds = SegmentDataset(audio.list_audio(corpus["music"]), NoiseBank(audio.list_audio(corpus["noise"])),
                        IRBank(audio.list_audio(corpus["rir"])), aug.context, items_per_song=64)
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers, collate_fn=collate_segments,
                        worker_init_fn=worker_init_fn if workers else None, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    n = 0
    t = time.perf_counter()
    for i, b in enumerate(loader):
        if i == 1:  # exclude worker start-up and the first batch
            n, t = 0, time.perf_counter()
        if i > batches:
            break
        aug.pairs(b["seg"].to(device), b["noise"].to(device), b["ir"].to(device), g)
        n += b["seg"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (about 1 minute)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2, this machine's cores)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rep = 2 if args.quick else 4
    fig: dict[str, float] = {}

    print(f"bench_train: torch {torch.__version__}, {args.threads} threads, {device}, {platform.processor() or ''}")
    fig["train_pairs_per_s_small"] = train_pairs_per_s("nafp_small", 32, rep + 2, device)
    fig["train_pairs_per_s_full"] = train_pairs_per_s("nafp", 16 if device.type == "cpu" else 320, rep, device)
    print(f"training pairs/s: small {fig['train_pairs_per_s_small']:.1f}, full {fig['train_pairs_per_s_full']:.1f}")

    batch = 256
    full, _ = build_model("nafp")
    loop = LoopNAFP(full)
    fig["infer_windows_per_s_full"] = infer_windows_per_s(full, batch, rep, device)
    fig["infer_windows_per_s_loop_head"] = infer_windows_per_s(loop, batch, rep, device)
    fig["matmul_gflops"] = matmul_gflops(device)
    fig["machine_limit_windows_per_s"] = fig["matmul_gflops"] / NAFP_GFLOPS_PER_WINDOW
    head_x = torch.randn(batch, 1024, device=device)
    with torch.inference_mode():
        fig["head_ms_batched"] = 1000 * timed(lambda: full.head(head_x), 10)
        fig["head_ms_loop"] = 1000 * timed(lambda: loop.head(head_x), 10)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = synth.make_demo_corpus(Path(tmp), synth.CorpusSpec(n_songs=8, song_seconds=20.0, n_noises=4,
                                                                    n_irs=4), progress=False)
        for w in (0, 1, 2):
            fig[f"pipeline_pairs_per_s_{w}_workers"] = pipeline_pairs_per_s(corpus, w, 6 if args.quick else 12,
                                                                             device)

    print()
    print(f"{'':44s}{'fplib':>12s}{'reference':>14s}{'ratio':>9s}")
    rows = [
        ("inference windows/s, full NAFP, batch 256", fig["infer_windows_per_s_full"],
         fig["infer_windows_per_s_loop_head"], "reference: the head as 128 modules in a Python loop"),
        ("  divide-and-encode head alone, batches/s", 1000 / fig["head_ms_batched"], 1000 / fig["head_ms_loop"],
         "batched matrix products against the loop"),
        ("  against the machine limit, windows/s", fig["infer_windows_per_s_full"],
         fig["machine_limit_windows_per_s"],
         f"limit: {fig['matmul_gflops']:.0f} GFLOP/s matmul / {NAFP_GFLOPS_PER_WINDOW} GFLOPs per window"),
    ]
    for label, ours, ref, note in rows:
        print(f"{label:44s}{ours:12.2f}{ref:14.2f}{ours / ref:8.2f}x   ({note})")
    print(f"{'training pairs/s, small (batch 32)':44s}{fig['train_pairs_per_s_small']:12.1f}")
    print(f"{'training pairs/s, full (batch 16 on CPU)':44s}{fig['train_pairs_per_s_full']:12.1f}")
    for w in (0, 1, 2):
        label = f"online pipeline pairs/s, no model, {w} workers"
        print(f"{label:44s}{fig[f'pipeline_pairs_per_s_{w}_workers']:12.1f}")
    print("the pipeline keeps up with training when its pairs/s exceed the model's training pairs/s")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
