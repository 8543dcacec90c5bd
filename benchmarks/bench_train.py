"""Training and inference throughput of the fingerprinter on this machine, with references measured
in the same run (machines are noisy: compare ratios, not absolute figures).

1. Training pairs/s (forward + backward + Adam step on a batch of clean/degraded log-mel pairs) for
   the full NAFP model and the small variant, each in a fresh process with fplib's allocator
   settings (``fplib/runtime.py``) and, as the reference, with glibc's defaults
   (``FPLIB_DEFAULT_MALLOC=1``): pairs/s, the share of CPU time spent in the kernel (system time) and
   minor page faults per step.
2. Inference windows/s at batch 256 for both widths: fplib's engine (OpenVINO on CPU,
   ``fplib/engine.py``) next to
   - ONNX Runtime on the same exported graph (the engine's fallback),
   - torch eager on the same module,
   - a reference of the same network whose divide-and-encode head is 128 separate small modules
     called in a Python loop (``reference.LoopNAFP``, the reference's way; full width only), and
   - the machine's limit: its measured float32 matrix-multiply rate divided by the network's FLOPs
     per window (0.607 GFLOPs for NAFP, NAFP's own count; 0.039 for the small one), so we see how
     far from the hardware we are.
3. The online data pipeline alone (decode the needed segment, degrade on the device, log-mel), no
   model: pairs/s with 0, 1 and 2 DataLoader workers, on a synthetic demo corpus.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from fplib import audio, engine, runtime
from fplib.augment import Augmenter
from fplib.data import IRBank, NoiseBank, SegmentDataset, collate_segments, worker_init_fn
from fplib.losses import nt_xent
from fplib.models.registry import build_model
from fplib.synth import demo

sys.path.insert(0, str(Path(__file__).parent))
from reference import LoopNAFP  # noqa: E402

NAFP_GFLOPS_PER_WINDOW = {"nafp": 0.607, "nafp_small": 0.0388}  # torch.utils.flop_counter agrees


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


def train_child(name: str, batch: int, repeat: int, threads: int) -> None:
    """In a fresh process: pairs/s, system-time share and page faults per training step (JSON)."""
    torch.set_num_threads(threads)
    model, _ = build_model(name)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(2 * batch, 1, 256, 32)

    def step():
        loss = nt_xent(*model(x).chunk(2))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeat):
        step()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    print(
        json.dumps(
            {
                "pairs_per_s": batch * repeat / (t1 - t0),
                "system_share": system / (user + system),
                "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / repeat,
                "allocator": runtime.allocator,
            }
        )
    )


def train_in_process(name: str, batch: int, repeat: int, threads: int, default_malloc: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    env[runtime.OPT_OUT] = "1" if default_malloc else ""
    out = subprocess.run(
        [sys.executable, __file__, "--train-child", name, str(batch), str(repeat), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def infer_windows_per_s(model, batch: int, repeat: int, device: torch.device) -> float:
    if isinstance(model, nn.Module):
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
    ds = SegmentDataset(
        audio.list_audio(corpus["music"]),
        NoiseBank(audio.list_audio(corpus["noise"])),
        IRBank(audio.list_audio(corpus["rir"])),
        aug.context,
        items_per_song=64,
    )
    loader = DataLoader(
        ds,
        batch_size=32,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_segments,
        worker_init_fn=worker_init_fn if workers else None,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
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
    ap.add_argument("--quick", action="store_true", help="fewer repeats (about 2 minutes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2, this machine's cores)")
    ap.add_argument("--small-batch", type=int, default=128, help="pairs per step, small model (the CPU recipe's)")
    ap.add_argument("--skip-train", action="store_true", help="inference and data pipeline only")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--train-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.train_child:
        name, batch, repeat, threads = args.train_child
        return train_child(name, int(batch), int(repeat), int(threads))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rep = 2 if args.quick else 4
    fig: dict = {}
    if args.quick:
        print(
            "bench_train QUICK MODE: fewer repeats and pipeline batches; the figures are not comparable with a "
            "full run's",
            flush=True,
        )

    print(f"bench_train: torch {torch.__version__}, {args.threads} threads, {device}, {platform.processor() or ''}")
    if args.skip_train:
        pass
    elif device.type == "cpu":
        for name, batch, r in (("nafp_small", args.small_batch, rep), ("nafp", 16, rep)):
            for label, default in (("fplib", False), ("glibc defaults", True)):
                fig[f"train_{name}_{label}"] = train_in_process(name, batch, r, args.threads, default)
    else:
        fig["train_pairs_per_s_small"] = train_pairs_per_s("nafp_small", 32, rep + 2, device)
        fig["train_pairs_per_s_full"] = train_pairs_per_s("nafp", 320, rep, device)

    batch = 256
    bounds = [matmul_gflops(device)]
    for name in ("nafp_small", "nafp"):
        model, _ = build_model(name)
        model.to(device).eval()
        x = torch.randn(batch, 1, 256, 32, device=device)
        fig[f"infer_{name}_engine"] = infer_windows_per_s(engine.runner(model, x), batch, rep, device)
        bounds.append(matmul_gflops(device))
        if device.type == "cpu":
            ort = engine.OnnxRunner(model, x, torch.get_num_threads())
            fig[f"infer_{name}_onnxruntime"] = infer_windows_per_s(ort, batch, rep, device)
        fig[f"infer_{name}_eager"] = infer_windows_per_s(model, batch, rep, device)
        bounds.append(matmul_gflops(device))
        if name == "nafp":
            loop = LoopNAFP(model)
            fig["infer_nafp_loop_head"] = infer_windows_per_s(loop, batch, rep, device)
            head_x = torch.randn(batch, 1024, device=device)
            with torch.inference_mode():
                fig["head_ms_batched"] = 1000 * timed(lambda m=model, h=head_x: m.head(h), 10)
                fig["head_ms_loop"] = 1000 * timed(lambda m=loop, h=head_x: m.head(h), 10)

    fig["matmul_gflops"] = statistics.median(bounds)
    fig["matmul_gflops_range"] = (min(bounds), max(bounds))
    for name in ("nafp_small", "nafp"):
        fig[f"limit_{name}"] = fig["matmul_gflops"] / NAFP_GFLOPS_PER_WINDOW[name]

    with tempfile.TemporaryDirectory() as tmp:
        corpus = demo.make_demo_corpus(
            Path(tmp), demo.CorpusSpec(n_songs=8, song_seconds=20.0, n_noises=4, n_irs=4), progress=False
        )
        for w in (0, 1, 2):
            fig[f"pipeline_pairs_per_s_{w}_workers"] = pipeline_pairs_per_s(corpus, w, 6 if args.quick else 12, device)

    print()
    if args.skip_train:
        pass
    elif device.type == "cpu":
        print("training (fresh process per row, alone):")
        print(f"{'':44s}{'pairs/s':>9s}{'system time':>13s}{'faults/step':>13s}")
        for name, batch in (("nafp_small", args.small_batch), ("nafp", 16)):
            a, b = fig[f"train_{name}_fplib"], fig[f"train_{name}_glibc defaults"]
            for label, r in (("fplib", a), ("glibc defaults", b)):
                row = f"{name}, {batch} pairs/step, {label}"
                print(f"  {row:42s}{r['pairs_per_s']:9.1f}{r['system_share']:13.1%}{r['faults_per_step']:13.0f}")
            print(f"  {'':42s}ratio {a['pairs_per_s'] / b['pairs_per_s']:.2f}x pairs/s")
    else:
        print(f"training pairs/s: small {fig['train_pairs_per_s_small']:.1f}, full {fig['train_pairs_per_s_full']:.1f}")
    lo, hi = fig["matmul_gflops_range"]
    print(
        f"\ninference, batch 256, windows/s (machine limit: {fig['matmul_gflops']:.0f} GFLOP/s matmul, "
        f"measured {lo:.0f}-{hi:.0f} between the rows / the network's GFLOPs per window):"
    )
    print(
        f"{'':14s}{'fplib':>9s}{'ONNX Runtime':>14s}{'torch eager':>13s}{'fplib/eager':>13s}{'limit':>9s}"
        f"{'fplib/limit':>13s}"
    )
    for name in ("nafp_small", "nafp"):
        e, t, lim = fig[f"infer_{name}_engine"], fig[f"infer_{name}_eager"], fig[f"limit_{name}"]
        o = fig.get(f"infer_{name}_onnxruntime", float("nan"))
        print(f"  {name:12s}{e:9.1f}{o:14.1f}{t:13.1f}{e / t:12.2f}x{lim:9.0f}{e / lim:13.0%}")
    print(
        f"  nafp, the head as 128 modules in a Python loop (reference): {fig['infer_nafp_loop_head']:.1f}; "
        f"head alone: batched {1000 / fig['head_ms_batched']:.0f} against loop {1000 / fig['head_ms_loop']:.0f} "
        f"batches/s"
    )
    print()
    for w in (0, 1, 2):
        label = f"online pipeline pairs/s, no model, {w} workers"
        print(f"{label:44s}{fig[f'pipeline_pairs_per_s_{w}_workers']:12.1f}")
    print("the pipeline keeps up with training when its pairs/s exceed the model's training pairs/s")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
