"""Command-line entry points, keeping the names, flags and defaults of the SEED scripts.

``generate_training_dataset -i SONGS [-n 5] [-tr 0.8] [-ir IRS] [-bn NOISES] [-o OUT]``
(installed as a console script; also ``python -m fplib.cli generate_training_dataset ...``).
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


COMMANDS = {"generate_training_dataset": generate_training_dataset_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: fplib {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
