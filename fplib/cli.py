"""Command-line entry points, keeping the names, flags and defaults of the SEED scripts.

``generate_training_dataset -i SONGS [-n 5] [-tr 0.8] [-ir IRS] [-bn NOISES] [-o OUT]``
``trainer [-ep 200] [-bs 32] [-m NAME] [--optim Adam|Lamb] [-o OUT] {static,dynamic,dynamic_online} ...``
(installed as console scripts; also ``python -m fplib.cli <command> ...``, which is what
``torchrun --nproc_per_node N -m fplib.cli trainer ...`` runs on several GPUs or machines).
"""

from __future__ import annotations

import argparse
import sys

from fplib import audio
from fplib.config import ParameterError


def _generate_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="generate_training_dataset",
        description="Write (clean, degraded) log-mel pairs of sampled seconds of every song: the static training set.",
    )
    ap.add_argument("-i", "--input_folder", required=True, help="folder of songs (wav, flac, ogg, opus, mp3)")
    ap.add_argument("-n", "--number_segments", type=int, default=5,
                    help="1-s segments sampled from each song (default: 5)")
    ap.add_argument("-tr", "--train_ratio", type=float, default=0.8,
                    help="share of songs for training, the rest for validation (default: 0.8)")
    ap.add_argument("-ir", "--impulse_response", default=None, help="folder of room impulse responses (default: none)")
    ap.add_argument("-bn", "--background_noise", default=None, help="folder of background noises (default: none)")
    ap.add_argument("-o", "--output_path", default=".", help="where Dataset_<N>/ is written (default: current folder)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ap.add_argument("--f_min", type=float, default=300.0, help="lowest mel frequency in Hz (default: 300)")
    ap.add_argument("--samples", type=int, default=3, help="training songs written as audio to Samples/ (default: 3)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing dataset with other settings")
    ap.add_argument("--device", default="cpu", help="torch device for augmentation and features (default: cpu)")
    return ap


def generate_training_dataset_main(argv: list[str] | None = None) -> int:
    from fplib.features import FrontEnd
    from fplib.generate import DatasetExistsError, GenerateConfig, generate_dataset

    args = _generate_parser().parse_args(argv)
    try:
        cfg = GenerateConfig(number_segments=args.number_segments, train_ratio=args.train_ratio, seed=args.seed,
                             n_sample_songs=args.samples)
        result = generate_dataset(args.input_folder, args.output_path, args.impulse_response, args.background_noise,
                                  cfg=cfg, fe=FrontEnd(f_min=args.f_min), overwrite=args.overwrite,
                                  device=args.device)
    except (DatasetExistsError, FileNotFoundError, NotADirectoryError, ValueError, ParameterError,
            audio.AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result.path}: {result.n_train} training and {result.n_val} validation pairs")
    if result.skipped:
        print(f"{len(result.skipped)} file(s) skipped:")
        for path, reason in result.skipped:
            print(f"  {path}: {reason}")
    return 0


def _trainer_parser() -> argparse.ArgumentParser:
    from fplib.models import model_names

    ap = argparse.ArgumentParser(prog="trainer", description="Contrastive training of the neural fingerprinter.")
    ap.add_argument("-ep", "--epochs", type=int, default=200, help="maximum epochs; early stopping may end sooner "
                    "(default: 200)")
    ap.add_argument("-bs", "--batch_size", type=int, default=32, help="global batch of pairs (default: 32)")
    ap.add_argument("-m", "--model_name", default="fingerprinter",
                    help="name of the saved model: OUT/NAME.pt (best) and the run folder OUT/NAME/ "
                         "(default: fingerprinter)")
    ap.add_argument("--optim", default="Adam", choices=["Adam", "Lamb", "adam", "lamb"], help="optimiser "
                    "(default: Adam)")
    ap.add_argument("-o", "--output_path", default=".", help="where the model is saved (default: current folder)")
    ap.add_argument("--arch", default="nafp", choices=model_names(), help="architecture (default: nafp)")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate at --lr_ref_batch (default: 1e-4)")
    ap.add_argument("--lr_ref_batch", type=int, default=120, help="the lr scales by batch_size / this (default: 120)")
    ap.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default: 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    ap.add_argument("--items_per_song", type=int, default=8, help="dynamic modes: segments per song per epoch")
    ap.add_argument("--val_items_per_song", type=int, default=4, help="dynamic modes: fixed validation segments "
                    "per validation song (default: 4)")
    ap.add_argument("--f_min", type=float, default=300.0, help="lowest mel frequency in Hz (default: 300)")
    ap.add_argument("--model_settings", default="{}", help='JSON overrides of the architecture\'s settings, e.g. '
                    '\'{"width": 0.5}\' (default: the architecture\'s own)')
    ap.add_argument("--preload", action="store_true", help="dynamic modes: decode the songs once and hold them in "
                    "memory (faster, 4 bytes per sample at 8 kHz)")
    ap.add_argument("--augment", default="{}", help='dynamic modes: JSON overrides of AugmentConfig, e.g. '
                    '\'{"snr_db": [0, 10]}\'')
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: auto)")
    ap.add_argument("--no_amp", action="store_true", help="train in full precision on a GPU (default: mixed)")
    ap.add_argument("--resume", action="store_true", help="continue the run in OUT/NAME/ where it stopped")
    modes = ap.add_subparsers(dest="mode", required=True, metavar="{static,dynamic,dynamic_online}")
    st = modes.add_parser("static", help="train on pairs written by generate_training_dataset")
    st.add_argument("-tp", "--train_path", required=True, help="folder of training pairs (Dataset_N/train_set)")
    st.add_argument("-vp", "--val_path", required=True, help="folder of validation pairs (Dataset_N/val_set)")
    dy = modes.add_parser("dynamic", help="online augmentation from already split folders")
    dy.add_argument("-tp", "--train_path", required=True, help="training songs")
    dy.add_argument("-tr", "--train_ir", default=None, help="training impulse responses")
    dy.add_argument("-tb", "--train_bn", default=None, help="training background noises")
    dy.add_argument("-vp", "--val_path", required=True, help="validation songs")
    dy.add_argument("-vr", "--val_ir", default=None, help="validation impulse responses")
    dy.add_argument("-vb", "--val_bn", default=None, help="validation background noises")
    do = modes.add_parser("dynamic_online", help="split folders into OUT/online_data/, then train as dynamic")
    do.add_argument("-p", "--path", required=True, help="songs")
    do.add_argument("-ir", "--impulse_responses", required=True, help="impulse responses")
    do.add_argument("-bn", "--background_noises", required=True, help="background noises")
    do.add_argument("-tr", "--train_ratio", type=float, default=0.8, help="share for training (default: 0.8)")
    return ap


def trainer_main(argv: list[str] | None = None) -> int:
    import json
    from pathlib import Path

    import torch.distributed as dist

    from fplib import train as T
    from fplib.augment import AugmentConfig
    from fplib.config import from_dict
    from fplib.data import Skipped
    from fplib.features import FrontEnd

    args = _trainer_parser().parse_args(argv)
    try:
        cfg = T.TrainConfig(model=args.arch, epochs=args.epochs, batch_size=args.batch_size, optim=args.optim,
                            lr=args.lr, lr_ref_batch=args.lr_ref_batch, patience=args.patience, seed=args.seed,
                            num_workers=args.workers if args.mode != "static" else 0,
                            items_per_song=args.items_per_song, val_items_per_song=args.val_items_per_song,
                            preload=args.preload, amp=not args.no_amp,
                            model_settings=json.loads(args.model_settings))
        fe = FrontEnd(f_min=args.f_min)
        aug = from_dict(AugmentConfig, json.loads(args.augment))
        out = Path(args.output_path)
        run_dir = out / args.model_name
        T.setup_distributed(args.device)
        rank = dist.get_rank() if dist.is_initialized() else 0
        skipped = Skipped()
        if args.mode == "static":
            source = T.static_source(args.train_path, args.val_path, fe)
        else:
            if args.mode == "dynamic_online":
                if rank == 0:
                    T.split_online_data(args.path, args.impulse_responses, args.background_noises, out,
                                        args.train_ratio, args.seed)
                if dist.is_initialized():
                    dist.barrier()
                d = out / "online_data"
                folders = [d / "train" / "train_set", d / "train" / "train_impulse_responses",
                           d / "train" / "train_background_noises", d / "val" / "val_set",
                           d / "val" / "val_impulse_responses", d / "val" / "val_background_noises"]
            else:
                folders = [args.train_path, args.train_ir, args.train_bn, args.val_path, args.val_ir, args.val_bn]
            source = T.online_source(*folders, cfg, aug, fe, skipped)
        if rank == 0 and skipped.items:
            print(skipped.report(), file=sys.stderr)
        T.train(cfg, source, run_dir, fe, resume=args.resume, device=args.device,
                run_params={k: v for k, v in vars(args).items()})
        if rank == 0 and (run_dir / "best.pt").exists():
            import shutil

            from fplib.storage import atomic_path

            with atomic_path(out / f"{args.model_name}.pt") as tmp:
                shutil.copyfile(run_dir / "best.pt", tmp)
            print(f"best model: {out / f'{args.model_name}.pt'} (run folder {run_dir})")
    except (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, ParameterError, audio.AudioError,
            T.TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; continue with the same command plus --resume (run folder {args.output_path}/"
              f"{args.model_name})", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def create_faiss_indexes_main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from fplib import index
    from fplib.catalogue import Catalogue

    ap = argparse.ArgumentParser(prog="create_faiss_indexes", description="Build a faiss index over a catalogue "
                                 "of fingerprints: NAME.index, NAME.json ({first vector id: song}), NAME.meta.json.")
    ap.add_argument("-i", required=True, help="the fingerprints: a catalogue folder (notebook 04 / fplib.catalogue)")
    ap.add_argument("-n", required=True, help="name of the index files")
    ap.add_argument("-m", type=int, default=32, help="PQ sub-quantisers (default: 32)")
    ap.add_argument("-d", type=int, default=128, help="fingerprint dimension (default: 128)")
    ap.add_argument("-nlist", type=int, default=256, help="IVF lists (default: 256)")
    ap.add_argument("--factory", default=None, help="any faiss index-factory string instead, e.g. IVF1024,PQ64")
    ap.add_argument("--nprobe", type=int, default=40, help="IVF lists visited per search (default: 40)")
    ap.add_argument("-o", "--output_path", default=".", help="folder for the index files (default: current folder)")
    args = ap.parse_args(argv)
    try:
        with Catalogue(args.i) as cat:
            path = index.build(cat, args.n, Path(args.output_path), m=args.m, d=args.d, nlist=args.nlist,
                               factory=args.factory, nprobe=args.nprobe)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{path} and {path.with_suffix('.json')}")
    return 0


def recognize_main(argv: list[str] | None = None) -> int:
    from fplib import search

    ap = argparse.ArgumentParser(prog="recognize", description="Identify recordings: song, offset and score, "
                                 "or 'not in the database'.")
    ap.add_argument("queries", nargs="+", help="audio files (1 s or longer)")
    ap.add_argument("--model", required=True, help="checkpoint (best.pt)")
    ap.add_argument("--catalogue", required=True, help="catalogue folder")
    ap.add_argument("--index", required=True, help="NAME.index (its NAME.threshold.json is used if present)")
    ap.add_argument("--method", default="sequence", choices=["sequence", "vote"])
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--phases", type=int, default=None, help="query phases per 0.5-s hop (fplib.search; default: "
                    "those the threshold was calibrated with, else 1)")
    ap.add_argument("--decision", default=None, choices=["score", "margin"], help="what the threshold is compared "
                    "with (default: what it was calibrated with, else score)")
    args = ap.parse_args(argv)
    try:
        rec = search.recognizer_from_files(args.model, args.catalogue, args.index, nprobe=args.nprobe,
                                           phases=args.phases, decision=args.decision)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for q in args.queries:
        try:
            r = rec.recognize(q, method=args.method, top=args.top)
        except (audio.AudioError, ValueError) as e:
            print(f"{q}: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if not r.in_database:
            print(f"{q}: not in the database ({r.reason})")
        for m in r.matches if r.in_database else []:
            print(f"{q}: {m.name} at {m.offset_s:.1f} s (score {m.score:.3f})")
    return 1 if failed else 0


def _model_argument(ap: argparse.ArgumentParser) -> None:
    """``--model``: required here; where fplib ships a model this becomes its default."""
    ap.add_argument("--model", required=True, help="checkpoint (best.pt)")


def listen_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="listen", description="Live recognition: name each song as soon as it is recognised (song, where it is "
        "now, seconds of audio needed, confidence), from a microphone or from audio on standard input.",
        epilog="examples: listen --model M --catalogue C --index I.index   (microphone); "
               "ffmpeg -i x.mp3 -f wav - | listen - ...;  arecord -f S16_LE -r 16000 -c 1 -t raw | listen - "
               "--format s16le --rate 16000 ...")
    ap.add_argument("source", nargs="?", default="mic", help="mic (default: the input device), - (standard "
                    "input: wav, flac, ogg, mp3 ... as FFmpeg decodes them, or raw PCM with --format), or a file")
    _model_argument(ap)
    ap.add_argument("--catalogue", required=True, help="catalogue folder")
    ap.add_argument("--index", required=True, help="NAME.index (its NAME.threshold.json is used if present)")
    ap.add_argument("--format", default=None, choices=["s16le", "f32le"], help="the input is raw interleaved PCM "
                    "of this sample format (needs --rate)")
    ap.add_argument("--rate", type=int, default=None, help="raw PCM: sample rate in Hz")
    ap.add_argument("--channels", type=int, default=1, help="raw PCM: channels, averaged to mono (default: 1)")
    ap.add_argument("--input-device", default=None, help="microphone: sounddevice input device (number or name; "
                    "list them with python -m sounddevice)")
    ap.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True, help="standard input or a "
                    "file: process no faster than real time, as if live (default); --no-realtime: as fast as possible")
    ap.add_argument("--json", action="store_true", help="one JSON object a line per event")
    ap.add_argument("--window", type=float, default=10.0, help="rolling buffer, s (default: 10)")
    ap.add_argument("--change", type=float, default=3.0, help="the last seconds also decided on every hop, to "
                    "catch a change of song (default: 3; 0: off)")
    ap.add_argument("--confirm", type=int, default=2, help="consecutive accepting hops (0.5 s) before an answer "
                    "(default: 2)")
    ap.add_argument("--jump", type=float, default=1.5, help="an offset this far (s) from the expected one is a new "
                    "answer (default: 1.5)")
    ap.add_argument("--forget", type=float, default=4.0, help="report the song lost after this many seconds "
                    "without it (default: 4)")
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--phases", type=int, default=None, help="query phases per 0.5-s hop (default: those the "
                    "threshold was calibrated with, else 1)")
    ap.add_argument("--decision", default=None, choices=["score", "margin"], help="what the threshold is compared "
                    "with (default: what it was calibrated with, else score)")
    args = ap.parse_args(argv)
    if args.format and not args.rate:
        ap.error("--format needs --rate")

    from fplib import listen, search

    try:
        rec = search.recognizer_from_files(args.model, args.catalogue, args.index, nprobe=args.nprobe,
                                           phases=args.phases, decision=args.decision)
        listener = listen.Listener(rec, window_s=args.window, change_s=args.change or None, confirm=args.confirm,
                                   jump_s=args.jump, forget_s=args.forget)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sr = rec.fe.sr
    stream = None
    try:
        if args.source == "mic":
            chunks = listen.microphone_chunks(sr, device=int(args.input_device) if str(args.input_device).isdigit()
                                              else args.input_device)
        else:
            stream = sys.stdin.buffer if args.source == "-" else open(args.source, "rb")
            chunks = (listen.pcm_chunks(stream, args.format, args.rate, args.channels, sr) if args.format
                      else listen.decoded_chunks(stream, sr))
            if args.realtime:
                chunks = listen.paced(chunks, sr)
        listen.run(listener, chunks, as_json=args.json)
    except (listen.ListenError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if stream is not None and stream is not sys.stdin.buffer:
            stream.close()
    return 0


COMMANDS = {"generate_training_dataset": generate_training_dataset_main, "trainer": trainer_main,
            "create_faiss_indexes": create_faiss_indexes_main, "recognize": recognize_main,
            "listen": listen_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: fplib {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
