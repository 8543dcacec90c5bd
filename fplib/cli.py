"""Command-line entry points, keeping the names, flags and defaults of the original scripts.

Identify your own music (each also ``fplib <command>``; ``--help`` explains every flag)::

    generate_fingerprints -i SONGS -o CATALOGUE            fingerprint a folder (resumable)
    create_faiss_indexes -i CATALOGUE -n NAME -o DIR       index the fingerprints
    calibrate_threshold --catalogue CATALOGUE --index DIR/NAME.index   "not in the database"
    recognize --catalogue CATALOGUE --index DIR/NAME.index RECORDING.m4a
    fplib db add|remove|list --catalogue CATALOGUE --index DIR/NAME.index ...

Training: ``generate_training_dataset -i SONGS [-n 5] [-tr 0.8] [-ir IRS] [-bn NOISES] [-o OUT]`` and
``trainer [-ep 200] [-bs 32] [-m NAME] [--optim Adam|Lamb] [-o OUT] {static,dynamic,dynamic_online} ...``
(options may also follow the mode). ``python -m fplib.cli <command> ...`` is what
``torchrun --nproc_per_node N -m fplib.cli trainer ...`` runs on several GPUs or machines.

Commands without ``--model`` use the shipped pretrained model (:mod:`fplib.pretrained`). Exit codes:
0 done, 1 some inputs failed (listed, the rest was done), every input was unusable (listed), or the
disk is full (the file named; what was written is kept: rerun to continue), 2 usage or input error
(nothing done), 130 interrupted (rerun to continue). Heavy modules (torch, faiss) are imported only
after the arguments are parsed, so ``--help`` and usage errors are fast.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time

OK, FAILED, USAGE = 0, 1, 2
INTERRUPTED = 130
# the registered architectures (fplib.models.model_names(); listed here so that --help needs no torch)
ARCHS = ("attn", "attn_small", "nafp", "nafp_small", "samaf", "samaf_mfcc", "samaf_small")
SHIPPED = "the shipped pretrained model, fplib/pretrained/fplib-small-v2.pt"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose long flags follow one convention: words joined by ``_``, as the seed's
    flags are (``--batch_size``, ``--input_folder``). Every long flag is also accepted with ``-`` between
    its words (``--batch-size``), an alias that ``--help`` does not repeat; the few flags once spelled with
    ``-`` (``--no-threshold``, ``--input-device``, ``--no-realtime``) keep working that way."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _HideAliases)
        super().__init__(*a, **kw)

    def add_argument(self, *flags, **kw):
        longs = [f for f in flags if f.startswith("--") and len(f) > 2]
        canonical = [f[:2] + f[2:].replace("-", "_") for f in longs]
        if longs and any(c != f for c, f in zip(canonical, longs, strict=True)) and not kw.get("dest"):
            kw["dest"] = canonical[0][2:]  # the dest of the canonical spelling, whichever is listed first
        names = list(dict.fromkeys([f for f in flags if f not in longs] + canonical))
        aliases = [f[:2] + f[2:].replace("_", "-") for f in canonical]
        aliases = [a for a in dict.fromkeys(aliases) if a not in names]
        if kw.get("action") is argparse.BooleanOptionalAction:
            kw["action"] = _Switch
        action = super().add_argument(*names, *aliases, **kw)
        action.hidden_aliases = set(aliases)
        if isinstance(action, _Switch):  # it made --no-x; --no_x is the canonical one
            for f in canonical:
                self._option_string_actions["--no_" + f[2:]] = action
                action.option_strings.append("--no_" + f[2:])
                action.hidden_aliases.add("--no-" + f[2:])
        return action

    def add_subparsers(self, **kw):
        kw.setdefault("parser_class", Parser)
        return super().add_subparsers(**kw)

    def _get_option_tuples(self, option_string):
        # an abbreviation (--batch) matches both spellings of one flag: that is not ambiguous
        unique = {}
        for t in super()._get_option_tuples(option_string):
            unique.setdefault(id(t[0]), t)
        return list(unique.values())


class _Switch(argparse.BooleanOptionalAction):
    """``--x`` / ``--no_x`` (and ``--no-x``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.option_strings:
            setattr(namespace, self.dest, not option_string.startswith(("--no-", "--no_")))

    def format_usage(self):
        return " | ".join(o for o in self.option_strings if o not in getattr(self, "hidden_aliases", ()))


class _HideAliases(argparse.HelpFormatter):
    """Help that lists each flag's canonical spellings, not its ``-`` aliases."""

    def _format_action_invocation(self, action):
        hidden = getattr(action, "hidden_aliases", None)
        if hidden and action.option_strings:
            action = copy.copy(action)
            action.option_strings = [o for o in action.option_strings if o not in hidden]
        return super()._format_action_invocation(action)


def exit_code(e: BaseException) -> int | None:
    """The exit code of a project error, in one place (None: not an error the commands report; it is raised).

    1 (FAILED): some of the work failed or a write met a full disk; what was done is kept (rerun to
    continue) or rolled back, as the message says. 2 (USAGE): bad input or usage, nothing was done.
    130 (INTERRUPTED): Ctrl-C; rerun to continue."""
    from fplib.config import ParameterError
    from fplib.data import NoUsableFiles
    from fplib.errors import BadFileError, PartlyDone, Refused
    from fplib.storage import DiskFullError

    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(e, (DiskFullError, PartlyDone, NoUsableFiles)):
        return FAILED
    if isinstance(e, (BadFileError, Refused, ParameterError, FileNotFoundError, NotADirectoryError,
                      FileExistsError, ValueError, KeyError)):
        return USAGE
    return _late_exit_code(e)


def _late_exit_code(e: BaseException) -> int | None:
    """Errors of modules that import torch or faiss, checked only when already imported."""
    for module, names, code in (("fplib.pretrained", ("PretrainedError",), USAGE),
                                ("fplib.train", ("TrainingDiverged",), USAGE),
                                ("fplib.corpus", ("CorpusError",), FAILED),
                                ("fplib.listen", ("ListenError",), USAGE)):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(e, tuple(getattr(mod, n) for n in names)):
            return code
    if isinstance(e, RuntimeError) and type(e).__module__.startswith("faiss"):
        return USAGE
    return None


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, work, *, again: str = "") -> int:
    """Every command: parse ``argv``, call ``work(args)`` (which prints and returns an exit code or None for
    0), and turn the project's errors into one ``error: ...`` line and their exit code (:func:`exit_code`).
    ``again`` says how to continue after an interruption or a full disk (e.g. ``"rerun the same command to
    continue"``); without it, nothing was changed."""
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    from fplib.errors import PartlyDone, Refused
    from fplib.storage import DiskFullError

    try:
        code = work(args)
        return OK if code is None else code
    except BaseException as e:
        code = exit_code(e)
        if code is None:
            raise
        if code == INTERRUPTED:
            print(f"interrupted; {again or 'nothing was changed'}", file=sys.stderr)
        elif isinstance(e, Refused):
            for what, reason in e.problems:
                _err(f"{what}: {reason}")
            print(e.consequence, file=sys.stderr)
        elif isinstance(e, PartlyDone):
            _err(e.message)
            _print_skipped(e.failures, "failed")
        elif isinstance(e, DiskFullError):
            _err(f"{e}; free some space, then {again or 'run the same command again'}")
        else:
            _err(e)
        return code


def _parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the exit code argparse chose (0 for --help, 2 for a usage error)."""
    try:
        return ap.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else USAGE


def _err(msg) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _disk_full_fails(main):
    """A command whose writes may meet a full disk: a clear error and exit 1, not a traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except OSError as e:
            from fplib.storage import DiskFullError

            if not isinstance(e, DiskFullError):
                raise
            _err(f"{e}; free some space and run the same command again")
            return FAILED

    return wrapped


def _plain_name(what: str):
    """An argparse ``type`` for an option that names files inside an output folder: a plain name, never a
    path (``../x`` or ``a/b`` would write outside the folder)."""

    def check(value: str) -> str:
        seps = {"/", "\\", os.sep, os.altsep} - {None}
        if not value or value in (".", "..") or any(c in value for c in seps) or "\0" in value:
            raise argparse.ArgumentTypeError(f"{value!r}: the {what} must be a plain name, not a path "
                                             f"(no '/' or '\\' in it, not '.' or '..'); choose the folder with -o")
        return value

    return check


def _model_path(model: str | None) -> str:
    """``--model``: a checkpoint, or a shipped model by name (``fplib-small-v1``); none: the default shipped
    model (either checked against its card's checksum)."""
    from fplib import pretrained

    if model and (model not in pretrained.NAMES or os.path.exists(model)):
        return model
    return str(pretrained.default_model(name=model or None))


def _input_errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises (imported late: these modules pull in numpy, torch, faiss)."""
    from fplib.config import ParameterError
    from fplib.errors import BadFileError
    from fplib.pretrained import PretrainedError

    return (BadFileError, FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, KeyError,
            ParameterError, PretrainedError)


def _generate_parser() -> argparse.ArgumentParser:
    ap = Parser(
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
    """Write the static training set: (clean, degraded) log-mel pairs of sampled seconds of songs."""
    args = _parse(_generate_parser(), argv)
    if isinstance(args, int):
        return args
    from fplib import audio
    from fplib.config import ParameterError
    from fplib.data import NoUsableFiles
    from fplib.features import FrontEnd
    from fplib.generate import DatasetExistsError, GenerateConfig, generate_dataset
    from fplib.storage import DiskFullError

    try:
        cfg = GenerateConfig(number_segments=args.number_segments, train_ratio=args.train_ratio, seed=args.seed,
                             n_sample_songs=args.samples)
        result = generate_dataset(args.input_folder, args.output_path, args.impulse_response, args.background_noise,
                                  cfg=cfg, fe=FrontEnd(f_min=args.f_min), overwrite=args.overwrite,
                                  device=args.device)
    except NoUsableFiles as e:
        _err(e)
        return FAILED
    except DiskFullError as e:
        _err(f"{e}; free some space, then rerun the same command to resume (nothing already written was lost)")
        return FAILED
    except (DatasetExistsError, FileNotFoundError, NotADirectoryError, ValueError, ParameterError,
            audio.AudioError) as e:
        _err(e)
        return USAGE
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    if not result.complete:
        _err(f"{result.path}: the dataset is not complete; rerun the same command to resume")
        return FAILED
    print(f"{result.path}: {result.n_train} training and {result.n_val} validation pairs")
    if result.skipped:
        print(f"{len(result.skipped)} file(s) skipped:")
        for path, reason in result.skipped:
            print(f"  {path}: {reason}")
    return OK


def _trainer_options(ap: argparse.ArgumentParser, defaults: bool) -> None:
    """The options common to every trainer mode. On the main parser they carry the defaults; on each
    mode's parser (so that they may follow the mode) they are suppressed unless given, so a mode's
    parser never overwrites a value given before the mode."""

    def d(value):
        return value if defaults else argparse.SUPPRESS

    ap.add_argument("-ep", "--epochs", type=int, default=d(200), help="maximum epochs; early stopping may end sooner "
                    "(default: 200)")
    ap.add_argument("-bs", "--batch_size", type=int, default=d(32), help="global batch of pairs (default: 32)")
    ap.add_argument("-m", "--model_name", default=d("fingerprinter"), type=_plain_name("model name"),
                    help="name of the saved model: OUT/NAME.pt (best) and the run folder OUT/NAME/ "
                         "(default: fingerprinter)")
    ap.add_argument("--optim", default=d("Adam"), choices=["Adam", "Lamb", "adam", "lamb"], help="optimiser "
                    "(default: Adam)")
    ap.add_argument("-o", "--output_path", default=d("."), help="where the model is saved (default: current folder)")
    ap.add_argument("--arch", default=d("nafp"), choices=ARCHS, help="architecture: nafp (NAFP as published), "
                    "attn (attention-based embeddings), samaf (binary codes from a sequence-to-sequence LSTM "
                    "autoencoder; samaf_mfcc takes 13 MFCCs at 100 frames/s), each with a CPU-sized _small variant "
                    "(default: nafp)")
    ap.add_argument("--temperature", type=float, default=d(None), help="NT-Xent temperature (default: the "
                    "architecture's: 0.05 for nafp, 0.1 for attn)")
    ap.add_argument("--lr", type=float, default=d(1e-4), help="learning rate at --lr_ref_batch (default: 1e-4)")
    ap.add_argument("--lr_ref_batch", type=int, default=d(120), help="the lr scales by batch_size / this "
                    "(default: 120)")
    ap.add_argument("--patience", type=int, default=d(20), help="early-stopping patience in epochs (default: 20)")
    ap.add_argument("--seed", type=int, default=d(0), help="random seed of the weights, batches and degradations "
                    "(default: 0)")
    ap.add_argument("--workers", type=int, default=d(2), help="DataLoader worker processes, dynamic modes "
                    "(default: 2)")
    ap.add_argument("--items_per_song", type=int, default=d(8), help="dynamic modes: segments per song per epoch "
                    "(default: 8)")
    ap.add_argument("--val_items_per_song", type=int, default=d(4), help="dynamic modes: fixed validation segments "
                    "per validation song (default: 4)")
    ap.add_argument("--f_min", type=float, default=d(300.0), help="lowest mel frequency in Hz (default: 300)")
    ap.add_argument("--model_settings", default=d("{}"), help='JSON overrides of the architecture\'s settings, e.g. '
                    '\'{"width": 0.5}\' (default: the architecture\'s own)')
    ap.add_argument("--preload", action="store_true", default=d(False), help="dynamic modes: decode the songs once "
                    "and hold them in memory (faster, 4 bytes per sample at 8 kHz)")
    ap.add_argument("--augment", default=d("{}"), help='dynamic modes: JSON overrides of AugmentConfig, e.g. '
                    '\'{"snr_db": [0, 10]}\' (default: none)')
    ap.add_argument("--device", default=d("auto"), help="auto, cpu, cuda, cuda:1 ... (default: auto)")
    ap.add_argument("--no_amp", action="store_true", default=d(False), help="train in full precision on a GPU "
                    "(default: mixed)")
    ap.add_argument("--resume", action="store_true", default=d(False), help="continue the run in OUT/NAME/ where "
                    "it stopped")
    ap.add_argument("--init", default=d(None), help="start from the weights of this checkpoint (fine-tuning: new "
                    "optimiser and schedule; same --arch and --model_settings; use another --seed than the run it "
                    "comes from, or the same segments and degradations are drawn again) (default: random weights)")


# the trainer's options that are paths: recorded with the run as absolute paths, however they were typed
_TRAINER_PATHS = ("output_path", "init", "train_path", "val_path", "train_ir", "train_bn", "val_ir", "val_bn", "path",
                  "impulse_responses", "background_noises")


def _trainer_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="trainer", description="Contrastive training of the neural fingerprinter. "
                                 "Common options go before or after the mode.")
    _trainer_options(ap, defaults=True)
    common = Parser(add_help=False)
    _trainer_options(common, defaults=False)
    modes = ap.add_subparsers(dest="mode", required=True, metavar="{static,dynamic,dynamic_online}")
    st = modes.add_parser("static", parents=[common], help="train on pairs written by generate_training_dataset",
                          description="Train on (clean, degraded) pairs written by generate_training_dataset.")
    st.add_argument("-tp", "--train_path", required=True, help="folder of training pairs (Dataset_N/train_set)")
    st.add_argument("-vp", "--val_path", required=True, help="folder of validation pairs (Dataset_N/val_set)")
    dy = modes.add_parser("dynamic", parents=[common], help="online augmentation from already split folders",
                          description="Degrade songs on the fly with rooms and noises, from already split folders.")
    dy.add_argument("-tp", "--train_path", required=True, help="training songs")
    dy.add_argument("-tr", "--train_ir", default=None, help="training impulse responses (default: none)")
    dy.add_argument("-tb", "--train_bn", default=None, help="training background noises (default: none)")
    dy.add_argument("-vp", "--val_path", required=True, help="validation songs")
    dy.add_argument("-vr", "--val_ir", default=None, help="validation impulse responses (default: none)")
    dy.add_argument("-vb", "--val_bn", default=None, help="validation background noises (default: none)")
    do = modes.add_parser("dynamic_online", parents=[common],
                          help="split folders into OUT/online_data/, then train as dynamic",
                          description="Split songs, rooms and noises into OUT/online_data/{train,val} (links), "
                                      "then train as dynamic.")
    do.add_argument("-p", "--path", required=True, help="songs")
    do.add_argument("-ir", "--impulse_responses", required=True, help="impulse responses")
    do.add_argument("-bn", "--background_noises", required=True, help="background noises")
    do.add_argument("-tr", "--train_ratio", type=float, default=0.8, help="share for training (default: 0.8)")
    return ap


def trainer_main(argv: list[str] | None = None) -> int:
    """Train the neural fingerprinter (static pairs, or online augmentation)."""
    args = _parse(_trainer_parser(), argv)
    if isinstance(args, int):
        return args
    from pathlib import Path

    import torch.distributed as dist

    from fplib import audio, runs, storage
    from fplib import train as T
    from fplib.augment import AugmentConfig
    from fplib.config import ParameterError, from_dict
    from fplib.data import NoUsableFiles, Skipped
    from fplib.models import frontend_for

    source = None
    try:
        cfg = T.TrainConfig(model=args.arch, epochs=args.epochs, batch_size=args.batch_size, optim=args.optim,
                            lr=args.lr, lr_ref_batch=args.lr_ref_batch, patience=args.patience, seed=args.seed,
                            num_workers=args.workers if args.mode != "static" else 0,
                            items_per_song=args.items_per_song, val_items_per_song=args.val_items_per_song,
                            preload=args.preload, amp=not args.no_amp,
                            model_settings=json.loads(args.model_settings), temperature=args.temperature)
        fe = frontend_for(args.arch, f_min=args.f_min)
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
                d = runs.Run(out).online_data
                folders = [d / "train" / "train_set", d / "train" / "train_impulse_responses",
                           d / "train" / "train_background_noises", d / "val" / "val_set",
                           d / "val" / "val_impulse_responses", d / "val" / "val_background_noises"]
            else:
                folders = [args.train_path, args.train_ir, args.train_bn, args.val_path, args.val_ir, args.val_bn]
            source = T.online_source(*folders, cfg, aug, fe, skipped)
        if rank == 0 and skipped.items:
            print(skipped.report(), file=sys.stderr)
        T.train(cfg, source, run_dir, fe, resume=args.resume, device=args.device, init=args.init,
                run_params={k: str(Path(v).resolve()) if k in _TRAINER_PATHS and v else v
                            for k, v in vars(args).items() if k != "resume"})
        if rank == 0 and runs.checkpoint(run_dir).exists():
            import shutil

            storage.clean_stale_temps(out)
            with storage.atomic_path(out / f"{args.model_name}.pt") as tmp:
                shutil.copyfile(runs.checkpoint(run_dir), tmp)
            failed = sorted(getattr(source, "failed", {}).items())
            if failed:
                print(f"{len(failed)} song(s) failed to decode during training; their segments were left out:",
                      file=sys.stderr)
                for path, reason in failed:
                    print(f"  {path}: {reason}", file=sys.stderr)
            print(f"best model: {out / f'{args.model_name}.pt'} (run folder {run_dir})")
    except NoUsableFiles as e:
        _err(e)
        return FAILED
    except storage.DiskFullError as e:
        _err(f"{e}; free some space, then continue with the same command plus --resume (nothing already written "
             f"was lost)")
        return FAILED
    except (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError, ParameterError, audio.AudioError,
            T.TrainingDiverged) as e:
        _err(e)
        return USAGE
    except KeyboardInterrupt:
        print(f"interrupted; continue with the same command plus --resume (run folder {args.output_path}/"
              f"{args.model_name})", file=sys.stderr)
        return INTERRUPTED
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return OK


def create_faiss_indexes_main(argv: list[str] | None = None) -> int:
    """Build a faiss index over a catalogue of fingerprints."""
    ap = Parser(prog="create_faiss_indexes", description="Build a faiss index over a catalogue "
                                 "of fingerprints: NAME.index, NAME.json ({first vector id: song}), NAME.meta.json.")
    ap.add_argument("-i", required=True, metavar="CATALOGUE",
                    help="the fingerprints: a catalogue folder (generate_fingerprints or notebook 04)")
    ap.add_argument("-n", required=True, metavar="NAME", type=_plain_name("index name"),
                    help="name of the index files: NAME.index, NAME.json, NAME.meta.json in the -o folder (a plain "
                         "name, not a path)")
    ap.add_argument("-m", type=int, default=32, help="PQ sub-quantisers, bytes per stored vector (default: 32; "
                    "binary codes are stored whole)")
    ap.add_argument("-d", type=int, default=128, help="fingerprint dimension, in bits for binary codes "
                    "(default: 128)")
    ap.add_argument("-nlist", type=int, default=256, help="IVF lists, reduced automatically for small catalogues "
                    "(default: 256)")
    ap.add_argument("--factory", default=None, help="any faiss index-factory string instead, e.g. IVF1024,PQ64, "
                    "or for binary codes BFlat (exact Hamming search) or BIVF1024 (default: IVF<nlist>,PQ<m>; binary "
                    "codes: BIVF<nlist>)")
    ap.add_argument("--nprobe", type=int, default=40, help="IVF lists visited per search (default: 40)")
    ap.add_argument("-o", "--output_path", default=".", help="folder for the index files (default: current folder)")
    args = _parse(ap, argv)
    if isinstance(args, int):
        return args
    from pathlib import Path

    from fplib import index, storage
    from fplib.catalogue import Catalogue

    try:
        with Catalogue(args.i) as cat:
            storage.clean_stale_temps(args.output_path)  # what a killed build left behind
            path = index.build(cat, args.n, Path(args.output_path), m=args.m, d=args.d, nlist=args.nlist,
                               factory=args.factory, nprobe=args.nprobe)
            n_songs = len(cat)
    except storage.DiskFullError as e:
        _err(f"{e}; free some space and run the same command again")
        return FAILED
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _err(e)
        return USAGE
    print(f"{path} and {path.with_suffix('.json')}: {n_songs} songs")
    print(f"next: calibrate_threshold --catalogue {args.i} --index {path}")
    return OK


def _collect_audio(paths: list[str]) -> tuple[list[tuple[str, str | None]], list[tuple[str, str]], list[str]]:
    """Files and folders -> ([(audio file, root folder for its name or None)], [(path, problem)],
    [ignored non-audio files]); folders are scanned recursively. Whatever is named like audio and is not
    a folder is listed, even a named pipe or a broken link, so that reading it reports why it is skipped."""
    import os
    from pathlib import Path

    from fplib import audio

    files, problems, ignored = [], [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if not f.is_dir() and not f.name.startswith("."))
            songs = [f for f in found if f.suffix.lower() in audio.AUDIO_EXTENSIONS]
            ignored += [str(f) for f in found if f.suffix.lower() not in audio.AUDIO_EXTENSIONS and f.is_file()]
            if not songs:
                problems.append((p, f"no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) in this folder"))
            files += [(str(f), str(path)) for f in songs]
        elif os.path.lexists(path):  # a file, or a named pipe, a link... that reading it will report
            files.append((str(path), None))
        else:
            problems.append((p, "no such file or folder"))
    return files, problems, ignored


def _print_skipped(skipped: list[tuple[str, str]], what: str = "skipped", limit: int | None = None) -> None:
    """List files with the reason on stderr (the first ``limit`` of them, if given)."""
    if skipped:
        print(f"{len(skipped)} file(s) {what}:", file=sys.stderr)
        for path, reason in skipped[:limit]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if limit is not None and len(skipped) > limit:
            print(f"  ... and {len(skipped) - limit} more", file=sys.stderr)


def _print_ignored(ignored: list[str]) -> None:
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        print(f"{len(ignored)} other file(s) ignored (not an audio extension): {shown}", file=sys.stderr)


def _fingerprint_files(files: list[tuple[str, str | None]], cat, model, device: str, batch: int, progress: bool,
                       workers: int | None = None, skip: set[str] | None = None):
    """Fingerprint ``files`` into ``cat``, naming each song by its path under its root folder (or its
    file name): one :class:`fplib.catalogue.ExtractResult` for all."""
    from itertools import groupby

    from fplib.catalogue import ExtractResult, extract

    total = ExtractResult([], [], [])
    for root, group in groupby(files, key=lambda fr: fr[1]):
        r = extract([f for f, _ in group], cat, model, device=device, batch=batch, progress=progress, root=root,
                    workers=workers, skip=skip)
        total.added += r.added
        total.already += r.already
        total.skipped += r.skipped
    return total


def _extraction_ranks(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) of this process: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group
    is joined (Gloo on CPU, NCCL on GPUs, one GPU per local rank); otherwise ``(0, 1, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    # ranks meet only at the end, after extracting their shards: hours apart on a large catalogue
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(days=7))
    return dist.get_rank(), world, device


def _merge_shards(args, files, result, fe, desc, rank: int, world: int):
    """Under torchrun, once every rank has extracted its shard: rank 0 merges the shards into the catalogue
    in the order of ``files`` (the vector ids one process would give), then deletes them; returns rank 0's
    account of the whole run (songs added, already there, skipped on every rank)."""
    import shutil

    import torch.distributed as dist

    from fplib.catalogue import Catalogue, ExtractResult, merge, shard_folder

    mine = (result.already, result.skipped)
    every = [None] * world
    dist.all_gather_object(every, mine)  # also waits for every rank's shard to be complete
    if rank:
        return result
    shards = [shard_folder(args.catalogue, r, world) for r in range(world)]
    with Catalogue(args.catalogue, fe, desc, store_dtype=args.store_dtype) as final:
        added = merge(final, shards, order=[f for f, _ in files], progress=not args.no_progress)
    # renamed aside first: a kill while deleting never leaves half a shard that the next run would open
    parent = shards[0].parent
    doomed = parent.with_name(f".{parent.name}.deleting-{os.getpid()}")
    os.replace(parent, doomed)
    shutil.rmtree(doomed)
    return ExtractResult(added, [f for a, _ in every for f in a], [x for _, sk in every for x in sk])


def generate_fingerprints_main(argv: list[str] | None = None) -> int:
    """Fingerprint a folder of songs into a catalogue (resumable)."""
    ap = Parser(
        prog="generate_fingerprints",
        description="Fingerprint songs (every 0.5 s, 128-d) into a catalogue folder, for create_faiss_indexes. "
                    "Folders are scanned recursively; audio already in the catalogue is skipped, so an "
                    "interrupted run continues where it stopped when run again.",
        epilog="exit status: 0 done, 1 some files were skipped (listed with the reason), 2 usage or input error")
    ap.add_argument("-i", "--input", required=True, nargs="+", metavar="SONGS",
                    help="folders (scanned recursively) and/or audio files: wav, flac, ogg, opus, mp3, aiff, "
                         "m4a, aac, mp4, webm, wma, ...; a song is named by its path under the folder given")
    ap.add_argument("-o", "--output", "--catalogue", dest="catalogue", required=True, metavar="CATALOGUE",
                    help="catalogue folder, created if missing, else added to (same model only)")
    ap.add_argument("--model", default=None, help=f"checkpoint that computes the fingerprints (default: {SHIPPED})")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default: cpu)")
    ap.add_argument("--batch", type=int, default=256, help="windows per forward pass (default: 256)")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes decoding songs beside the network (default: 1 on a multi-core machine)")
    ap.add_argument("--store_dtype", choices=("float32", "float16"), default=None,
                    help="how a new catalogue stores float fingerprints: float16 halves the disk and memory "
                         "re-ranking reads (default: float32; an existing catalogue must be given its own, or "
                         "converted with fplib db compact --dtype)")
    ap.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = _parse(ap, argv)
    if isinstance(args, int):
        return args
    files, problems, ignored = _collect_audio(args.input)
    if problems:
        for path, reason in problems:
            _err(f"{path}: {reason}")
        return USAGE
    from fplib import storage
    from fplib.catalogue import Catalogue, load_model, model_description, shard_folder

    t0 = time.perf_counter()
    rank, world, device = _extraction_ranks(args.device)
    try:
        ckpt = _model_path(args.model)
        model, fe = load_model(ckpt, device)
        desc = model_description(ckpt)
        merged: set[str] = set()  # under torchrun: audio already merged into the catalogue by an earlier run
        if world > 1 and os.path.lexists(os.path.join(args.catalogue, "catalogue.sqlite")):
            # the final catalogue is checked before the work, not after it
            with Catalogue(args.catalogue, fe, desc, store_dtype=args.store_dtype) as final:
                final.require_store()
                merged = {s.checksum for s in final.songs()}
        if args.store_dtype and desc.get("kind") == "binary":
            raise ValueError(f"--store_dtype is for float fingerprints; {ckpt} makes binary codes (stored packed)")
        folder = args.catalogue if world == 1 else shard_folder(args.catalogue, rank, world)
        cat = Catalogue(folder, fe, desc, store_dtype=args.store_dtype)
        try:
            cat.require_store()
        except ValueError:
            cat.close()
            raise
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    try:
        storage.clean_stale_temps(cat.folder, cat.folder / "vectors")  # what a killed run left behind
        result = _fingerprint_files(files[rank::world], cat, model, device, args.batch,
                                    not args.no_progress and rank == 0, args.workers, skip=merged)
        if world > 1:
            cat.close()
            result = _merge_shards(args, files, result, fe, desc, rank, world)
            if rank:
                return OK
            cat = Catalogue(args.catalogue)
        n_songs, total_s = len(cat), sum(s.duration for s in cat.songs())
    except storage.DiskFullError as e:
        _err(f"{e}; free some space and run the same command again to continue (fingerprinted songs are kept)")
        return FAILED
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue (fingerprinted songs are kept)", file=sys.stderr)
        return INTERRUPTED
    finally:
        cat.close()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    added_s = sum(s.duration for s in result.added)
    print(f"{args.catalogue}: {len(result.added)} song(s) added ({added_s / 60:.1f} min), {len(result.already)} "
          f"already there, {len(result.skipped)} skipped; {n_songs} songs ({total_s / 60:.1f} min) in the catalogue "
          f"[{time.perf_counter() - t0:.1f} s]")
    _print_skipped([(f, "its audio is already in the catalogue") for f in result.already], "already there", 10)
    _print_skipped(result.skipped)
    _print_ignored(ignored)
    if result.added:
        print(f"next: create_faiss_indexes -i {args.catalogue} -n NAME -o INDEX_FOLDER (or fplib db add, to add "
              f"songs to an existing index)")
    return FAILED if result.skipped else OK


@_disk_full_fails
def calibrate_threshold_main(argv: list[str] | None = None) -> int:
    """Calibrate "not in the database" for a catalogue and index (writes NAME.threshold.json)."""
    ap = Parser(
        prog="calibrate_threshold",
        description="Calibrate the threshold that decides 'not in the database' for this catalogue and index, "
                    "for a stated false-positive rate: queries of several lengths are cut from audio that is "
                    "NOT in the catalogue, degraded with rooms and noises, and recognised; the threshold is fitted "
                    "on half of that audio and its false-positive rate measured on the other half. Writes "
                    "NAME.threshold.json next to NAME.index, which recognize reads.",
        epilog="exit status: 0 done, 1 the held-back false-positive rate missed the target (nothing written), "
               "2 usage or input error")
    ap.add_argument("--catalogue", required=True, help="catalogue folder (generate_fingerprints)")
    ap.add_argument("--index", required=True, help="NAME.index (create_faiss_indexes)")
    ap.add_argument("--negatives", nargs="+", default=None, metavar="FOLDER",
                    help="folders/files of music that is not in the catalogue, ideally like what will be queried "
                         "(at least 2 files; default: the held-out songs of the real training corpus, with its "
                         "held-out rooms and noises, when build_corpus (make corpus) has made it in "
                         "outputs/corpus; else built-in synthetic songs, generated once and cached, of which "
                         "--builtin_songs)")
    ap.add_argument("--accept_miss", action="store_true", help="write the threshold even when the false-positive "
                    "rate measured on the held-back half misses the target (by default it is then not written)")
    ap.add_argument("--fpr", type=float, default=0.05, help="false-positive rate aimed at: the share of "
                    "out-of-database queries accepted (default: 0.05)")
    ap.add_argument("--model", default=None, help=f"the checkpoint that made the catalogue (default: {SHIPPED})")
    ap.add_argument("--phases", type=int, default=4, help="query phases per 0.5-s hop that recognize will use "
                    "(default: 4)")
    ap.add_argument("--decision", default="margin", choices=["score", "margin"], help="compare the threshold with "
                    "the best song's score, or with its margin over the next song (default: margin)")
    ap.add_argument("--lengths", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 10.0], metavar="S",
                    help="query lengths in seconds; other lengths interpolate (default: 1 2 3 5 10)")
    ap.add_argument("--snrs", type=float, nargs="+", default=[0.0, 5.0, 10.0, 15.0], metavar="DB",
                    help="signal-to-noise ratios of the added noise in dB (default: 0 5 10 15)")
    ap.add_argument("--queries", type=int, default=None, help="queries per (length, SNR) in each half (default: 40 "
                    "with the real corpus's held-out songs: a few dozen songs need that many for the held-back rate to "
                    "hold; 10 otherwise)")
    ap.add_argument("--noise_only", type=int, default=4, help="noise-only queries per length in each half "
                    "(default: 4)")
    ap.add_argument("--rooms", default=None, help="folder of room impulse responses (default: built-in simulated "
                    "rooms)")
    ap.add_argument("--noises", default=None, help="folder of background noises (default: built-in noises)")
    ap.add_argument("--builtin_songs", type=int, default=24, help="songs in the built-in negative corpus "
                    "(default: 24, 30 s each)")
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per search (default: as built)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the query positions, rooms and noises (default: 0)")
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ap.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = _parse(ap, argv)
    if isinstance(args, int):
        return args
    if not 0 <= args.fpr < 1:
        _err(f"--fpr must be in [0, 1), got {args.fpr}")
        return USAGE
    if (args.queries is not None and args.queries < 1) or args.noise_only < 0 or args.builtin_songs < 2 \
            or min(args.lengths) < 1:
        _err("--queries >= 1, --noise_only >= 0, --builtin_songs >= 2 and --lengths >= 1 s are needed")
        return USAGE
    from fplib import audio, evaluate, search, storage
    from fplib.data import IRBank, NoiseBank

    t0 = time.perf_counter()
    try:
        progress = not args.no_progress
        real = evaluate.corpus_negatives() if args.negatives is None else None
        if real is not None:
            builtin = {"rir": real["rir"], "noise": real["noise"]}
        elif args.negatives is None or args.rooms is None or args.noises is None:
            builtin = evaluate.calibration_corpus(args.builtin_songs, progress=progress)
        if real is not None:
            negatives = real["music"]
            print(f"negatives: {len(negatives)} held-out songs of the real training corpus "
                  f"({os.path.dirname(os.path.dirname(negatives[0]))}), with its held-out rooms and noises")
        elif args.negatives is None:
            negatives = audio.list_audio(builtin["music"])
            print(f"negatives: {len(negatives)} built-in synthetic songs ({builtin['music']}); `make corpus` "
                  f"builds real ones")
        else:
            found, problems, _ = _collect_audio(args.negatives)
            if problems:
                raise ValueError("; ".join(f"{p}: {r}" for p, r in problems))
            negatives = [f for f, _ in found]
        def files(given: str | None, kind: str) -> list:
            default = builtin[kind] if not given else None
            return audio.list_audio(given) if given else default if isinstance(default, list) else \
                audio.list_audio(default)

        irs = IRBank(files(args.rooms, "rir"), audio.SR, max_s=1.0)
        noises = NoiseBank(files(args.noises, "noise"), audio.SR)
        rec = search.recognizer_from_files(args.model, args.catalogue, args.index, no_threshold=True,
                                           nprobe=args.nprobe, phases=args.phases,
                                           decision=args.decision, device=args.device)
        cal = evaluate.calibrate_recognizer(rec, negatives, irs, noises, args.fpr, tuple(args.lengths),
                                            tuple(args.snrs), args.queries or (40 if real is not None else 10),
                                            args.noise_only, args.seed, progress,
                                            cross_fit=real is not None)
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return INTERRUPTED
    out = search.threshold_path(args.index)
    print(f"{'length':>8} {'windows':>7} {'threshold':>9} {'FPR (held-back)':>16}")
    for r in cal.per_length:
        fpr = "n/a" if r["fpr"] is None else f"{r['fpr']:.1%} of {r['n_test']}"
        print(f"{r['length_s']:>7g}s {r['windows']:>7d} {r['threshold']:>9.3f} {fpr:>16}"
              + ("  <- misses the target" if r in cal.missed else ""))
    if cal.missed and not args.accept_miss:
        _err(f"the false-positive rate measured on the held-back half misses the {args.fpr:.1%} aimed at for "
             f"{', '.join(str(r['length_s']) + ' s' for r in cal.missed)} (beyond two standard errors of "
             f"{', '.join(str(r['n_test']) for r in cal.missed)} queries); {out} was not written. Give more "
             f"negatives (--negatives, --queries), or --accept_miss to write it anyway")
        return FAILED
    storage.write_json(out, cal.to_json())
    overall = "n/a" if cal.measured_fpr is None else f"{cal.measured_fpr:.1%}"
    print(f"{out}: decision {cal.decision}, {cal.phases} phases; false-positive rate aimed at {args.fpr:.1%}, "
          + (f"measured {overall} held back in both directions between two halves of "
             f"{len(cal.negatives['calibration'])} and {len(cal.negatives['test'])} files, fitted on both"
             if cal.negatives.get("cross_fit") else
             f"measured {overall} on {len(cal.negatives['test'])} held-back files "
             f"(fitted on {len(cal.negatives['calibration'])})") + f" [{time.perf_counter() - t0:.1f} s]")
    _print_skipped([tuple(s) for s in cal.negatives["skipped"]], "left out of the negatives")
    return OK


def _build_corpus_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="build_corpus",
        description="Build the training corpus of recorded music, ambience and loudspeaker responses from "
                    "openly licensed Debian packages: fetched with apt-get download, unpacked with dpkg-deb -x "
                    "(nothing installed), decoded, down-mixed and resampled to 8 kHz, de-duplicated (copies, loops "
                    "and sped-up versions of a track, found by fingerprinting) and split into train and val by "
                    "song. Resumable: rerun the same command after an interruption. Writes OUT/manifest.json "
                    "(package, version, file, sha256 of the decoded audio, seconds, licence, split of every file).",
        epilog="exit status: 0 done, 1 a package could not be fetched or unpacked, 2 usage error, 130 interrupted")
    ap.add_argument("-o", "--output", default=None, help="corpus folder (default: outputs/corpus)")
    ap.add_argument("--debs", default=None, help="folder of downloaded .deb files, reused when present "
                    "(default: OUTPUT/debs)")
    ap.add_argument("--packages", nargs="+", default=None, metavar="PACKAGE",
                    help="only these packages (default: all of them; --list prints them)")
    ap.add_argument("--list", action="store_true", help="print the packages and what each gives, then exit")
    ap.add_argument("--no_dedupe", action="store_true", help="skip the search for duplicate tracks")
    ap.add_argument("--model", default=None, help="the model that fingerprints tracks to find copies "
                    "(default: the shipped fplib-small-v1, whatever the default model is: the corpus stays the same)")
    ap.add_argument("--no_progress", action="store_true", help="no progress bars")
    return ap


def _build_corpus(args: argparse.Namespace) -> None:
    from fplib import corpus

    if args.list:
        for s in corpus.SOURCES:
            what = " ".join(s.include) or "the works of music21's own corpus that state an open licence"
            print(f"{s.package:28s} {s.role:6s} {what}")
        return
    corpus.build(args.output, args.debs, args.packages, dedupe=not args.no_dedupe, model_path=args.model,
                 progress=not args.no_progress)


def build_corpus_main(argv: list[str] | None = None) -> int:
    """Build the real training corpus from Debian packages (``make corpus``): fplib.corpus."""
    return _run(_build_corpus_parser(), argv, _build_corpus,
                again="what was decoded is kept: run the same command again to continue")


def _db_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="fplib db", description="Manage the songs of a catalogue and its index without rebuilding: add, remove, "
                                     "list, compact. Changes are all or nothing.",
        epilog="exit status: 0 done, 1 failed while writing (rolled back), 2 usage or input error (nothing changed)")
    sub = ap.add_subparsers(dest="action", required=True, metavar="{add,remove,list,compact,merge}")
    common = Parser(add_help=False)
    common.add_argument("--catalogue", required=True, help="catalogue folder (generate_fingerprints)")
    add = sub.add_parser("add", parents=[common], help="fingerprint songs into the catalogue and add them to the index",
                         description="Fingerprint songs into the catalogue and add them to the index, all or none: "
                                     "an unreadable file, audio already in the catalogue, a file given twice or a "
                                     "name already taken refuses the whole addition.")
    add.add_argument("--index", required=True, help="NAME.index built from the catalogue (create_faiss_indexes)")
    add.add_argument("songs", nargs="+", help="audio files and/or folders (recursive; a song is named by its path "
                                              "under the folder given, or by its file name)")
    add.add_argument("--model", default=None, help=f"the catalogue's model (default: {SHIPPED})")
    add.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add.add_argument("--no_progress", action="store_true", help="no progress bar")
    rm = sub.add_parser("remove", parents=[common], help="remove songs, by name or id",
                        description="Remove songs from the catalogue and the index, all or none.")
    rm.add_argument("--index", required=True, help="NAME.index built from the catalogue")
    rm.add_argument("songs", nargs="+", help="song names (as listed) or numeric ids")
    ls = sub.add_parser("list", parents=[common], help="list the songs", description="List the catalogue's songs.")
    ls.add_argument("--index", default=None, help="also check that NAME.index matches the catalogue")
    ls.add_argument("--json", action="store_true", help="one JSON object per song per line")
    co = sub.add_parser("compact", parents=[common], help="rewrite the vector store without removed songs",
                        description="Copy the live songs' fingerprints into a new vector store and switch to it "
                                    "atomically (frees removed songs' rows; indexes stay valid). Also converts a "
                                    "catalogue made by an older fplib, and the store's dtype with --dtype.")
    co.add_argument("--dtype", choices=("float32", "float16"), default=None,
                    help="convert a float catalogue's store (default: keep it)")
    co.add_argument("--no_progress", action="store_true", help="no progress bar")
    me = sub.add_parser("merge", parents=[common], help="add the songs of other catalogues (shards) to this one",
                        description="Add every song of other catalogues made by the same model (e.g. shards "
                                    "extracted on other machines) to this catalogue, created if missing; audio "
                                    "already there is skipped, so an interrupted merge resumes. Then build the "
                                    "index with create_faiss_indexes.")
    me.add_argument("shards", nargs="+", help="catalogue folders to merge, in this order")
    me.add_argument("--no_progress", action="store_true", help="no progress bar")
    return ap


@_disk_full_fails
def db_main(argv: list[str] | None = None) -> int:
    """Add, remove or list songs of a catalogue and its index (no rebuild)."""
    args = _parse(_db_parser(), argv)
    if isinstance(args, int):
        return args
    if args.action == "add":
        return _db_add(args)
    if args.action == "merge":
        return _db_merge(args)
    from fplib import index
    from fplib.catalogue import Catalogue

    try:
        cat = Catalogue(args.catalogue)
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    with cat:
        if args.action == "compact":
            before = os.path.getsize(cat.store_path()) if not cat.legacy and os.path.exists(cat.store_path()) else None
            try:
                store = cat.compact(args.dtype, progress=not args.no_progress)
            except (*_input_errors(), RuntimeError) as e:
                _err(e)
                return USAGE
            after = os.path.getsize(cat.store_path(store)) if store["rows"] else 0
            was = f"{_size(before)} -> " if before is not None else "converted from one file per song; "
            print(f"{args.catalogue}: {len(cat)} songs, {store['rows']} rows of {store['dtype']} in {store['file']} "
                  f"({was}{_size(after)})")
            return OK
        songs = cat.songs()
        if args.action == "list":
            if args.index:
                try:
                    index.load(args.index, cat)
                except (*_input_errors(), RuntimeError) as e:
                    _err(e)
                    return USAGE
            for s in songs:
                if args.json:
                    print(json.dumps({"id": s.id, "name": s.name, "duration_s": round(s.duration, 3),
                                      "vectors": s.n_vectors, "path": s.path}, ensure_ascii=False))
                else:
                    print(f"{s.id:6d}  {s.duration:8.1f} s  {s.name}  ({s.path})")
            total = sum(s.duration for s in songs)
            note = f"; {args.index} matches it" if args.index else ""
            print(f"{len(songs)} songs, {total / 60:.1f} min{note}", file=sys.stderr)
            return OK
        by_name: dict[str, list] = {}
        for s in songs:
            by_name.setdefault(s.name, []).append(s)
        by_id = {s.id: s for s in songs}
        chosen, problems = {}, []
        for word in args.songs:
            if word in by_name and len(by_name[word]) == 1:
                chosen[by_name[word][0].id] = by_name[word][0]
            elif word in by_name:
                problems.append(f"{word!r}: {len(by_name[word])} songs have this name (ids "
                                f"{', '.join(str(s.id) for s in by_name[word])}); remove by id")
            elif word.isdigit() and int(word) in by_id:
                chosen[int(word)] = by_id[int(word)]
            else:
                problems.append(f"{word!r}: no song with this name or id in {args.catalogue} (fplib db list)")
        if problems:
            for p in problems:
                _err(p)
            print("nothing was removed", file=sys.stderr)
            return USAGE
        try:
            index.load(args.index, cat)  # the index matches the catalogue before anything changes
            index.remove_songs(args.index, cat, list(chosen))
        except (*_input_errors(), RuntimeError) as e:
            _err(e)
            return USAGE
        for s in chosen.values():
            print(f"removed {s.id}: {s.name}")
        print(f"{len(chosen)} song(s) removed; {len(cat)} left")
    return OK


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _db_merge(args: argparse.Namespace) -> int:
    from fplib.catalogue import Catalogue, merge

    try:
        with Catalogue(args.shards[0]) as first:
            fe, model, dtype = first.fe, first.model, first.store_dtype
        target = Catalogue(args.catalogue, fe, model, store_dtype=None if os.path.lexists(
            os.path.join(args.catalogue, "catalogue.sqlite")) or dtype == "uint8" else dtype)
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    with target:
        try:
            added = merge(target, args.shards, progress=not args.no_progress)
        except (*_input_errors(), RuntimeError) as e:
            _err(e)
            return USAGE
        print(f"{args.catalogue}: {len(added)} song(s) added from {len(args.shards)} catalogue(s); {len(target)} songs "
              f"in the catalogue")
        if added:
            print(f"next: create_faiss_indexes -i {args.catalogue} -n NAME -o INDEX_FOLDER")
    return OK


def _db_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fplib import audio, index
    from fplib.catalogue import Catalogue, file_checksum, load_model, model_description, same_model

    files, problems, ignored = _collect_audio(args.songs)
    try:
        ckpt = _model_path(args.model)
        model, fe = load_model(ckpt, args.device)
        cat = Catalogue(args.catalogue)  # an existing catalogue only
        if cat.fe != fe or cat.legacy:
            cat.close()
            cat.require_store()
            raise ValueError(f"{ckpt}: its front end differs from the catalogue's")
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    with cat:
        try:
            if cat.model and not same_model(model_description(ckpt), cat.model):
                raise ValueError(f"{args.catalogue}: the catalogue was made by another model "
                                 f"({cat.model.get('checkpoint')}); pass it with --model")
            index.load(args.index, cat)  # the index matches the catalogue before anything changes
        except (*_input_errors(), RuntimeError) as e:
            _err(e)
            return USAGE
        names = {s.name for s in cat.songs()}
        seen: dict[str, str] = {}
        for f, root in files:  # check everything before changing anything
            name = str(Path(f).relative_to(root).with_suffix("")) if root else Path(f).stem
            try:
                duration = audio.info(f).duration
                if duration < fe.win_s:
                    raise audio.AudioError(f, f"too short: {duration:.2f} s, at least {fe.win_s} s needed")
                checksum = file_checksum(f)
            except (audio.AudioError, OSError) as e:
                problems.append((f, getattr(e, "reason", str(e))))
                continue
            known = cat.find_checksum(checksum)
            if known is not None:
                problems.append((f, f"already in the catalogue as song {known.id} {known.name!r}"))
            elif checksum in seen:
                problems.append((f, f"the same audio as {seen[checksum]}, given twice"))
            elif name in names:
                problems.append((f, f"a song named {name!r} is already in the catalogue"))
            seen[checksum] = f
            names.add(name)
        if problems:
            for path, reason in problems:
                _err(f"{path}: {reason}")
            print("nothing was added", file=sys.stderr)
            return USAGE
        try:
            result = _fingerprint_files(files, cat, model, args.device, 256, not args.no_progress)
        except BaseException:
            cat.remove_many([s.id for s in cat.songs() if s.path in {f for f, _ in files}])
            raise
        if result.skipped or result.already:
            cat.remove_many([s.id for s in result.added])
            _print_skipped(result.skipped + [(f, "already in the catalogue") for f in result.already], "failed")
            print("nothing was added", file=sys.stderr)
            return FAILED
        try:
            index.add_songs(args.index, cat, result.added)
        except BaseException as e:
            cat.remove_many([s.id for s in result.added])
            if isinstance(e, Exception):
                _err(f"{args.index}: {e}; nothing was added")
                return FAILED
            raise
        for s in result.added:
            print(f"added {s.id}: {s.name} ({s.duration:.1f} s)")
        print(f"{len(result.added)} song(s) added; {len(cat)} in {args.catalogue} and {args.index}")
    _print_ignored(ignored)
    return OK


def recognize_main(argv: list[str] | None = None) -> int:
    """Identify recordings: song, offset and score, or 'not in the database'."""
    ap = Parser(
        prog="recognize", description="Identify recordings: the song, where in it the recording starts, the score "
                                      "and the confidence, or 'not in the database'.",
        epilog="The threshold comes from NAME.threshold.json next to the index (calibrate_threshold), else from the "
               "shipped model's card when the catalogue was made by the shipped model; otherwise recognize refuses "
               "to decide (run calibrate_threshold, or pass --no-threshold). Exit status: 0 every query answered, "
               "1 some queries could not be read (listed), 2 usage or input error.")
    ap.add_argument("queries", nargs="+", help="recordings (1 s or longer): wav, flac, mp3, m4a, aac, ogg, opus, "
                                               "webm, ...")
    ap.add_argument("--model", default=None, help=f"checkpoint that made the catalogue (default: {SHIPPED})")
    ap.add_argument("--catalogue", required=True, help="catalogue folder (generate_fingerprints)")
    ap.add_argument("--index", required=True, help="NAME.index (create_faiss_indexes); its NAME.threshold.json is "
                                                   "used if present")
    ap.add_argument("--json", action="store_true", help="print one JSON object per query per line (file, in_database, "
                    "song, offset_s, score, confidence, threshold, query_start_s, query_end_s, timings_ms, matches)")
    ap.add_argument("--no-threshold", "--no_threshold", dest="no_threshold", action="store_true",
                    help="accept every query as in the database (no 'not in the database' decision)")
    ap.add_argument("--method", default="sequence", choices=["sequence", "vote"], help="sequence: align and re-score "
                    "the query's windows (NAFP); vote: majority vote of the windows' neighbours (default: sequence)")
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per search (default: as built)")
    ap.add_argument("--top", type=int, default=3, help="best songs shown per query (default: 3)")
    ap.add_argument("--phases", type=int, default=None, help="query phases per 0.5-s hop (fplib.search; default: "
                    "those the threshold was calibrated with, else 1)")
    ap.add_argument("--decision", default=None, choices=["score", "margin"], help="what the threshold is compared "
                    "with (default: what it was calibrated with, else score)")
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = _parse(ap, argv)
    if isinstance(args, int):
        return args
    from fplib import search

    try:
        rec = search.recognizer_from_files(args.model, args.catalogue, args.index, no_threshold=args.no_threshold,
                                           nprobe=args.nprobe, phases=args.phases, decision=args.decision,
                                           device=args.device)
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    note = f"threshold: {rec.threshold_source}; decision {rec.decision}, {rec.phases} phase(s)"
    print(note, file=sys.stderr if args.json else sys.stdout)
    failed, found = 0, 0
    for q in args.queries:
        try:
            r = rec.recognize(q, method=args.method, top=args.top)
        except ValueError as e:  # AudioError included
            failed += 1
            if args.json:
                print(json.dumps({"file": q, "error": str(e)}, ensure_ascii=False))
            print(f"error: {e}" if str(e).startswith(q) else f"{q}: error: {e}", file=sys.stderr)
            continue
        found += r.in_database
        if args.json:
            print(json.dumps(_result_json(q, r, rec), ensure_ascii=False))
        else:
            _print_result(q, r)
    summary = (f"{len(args.queries)} queries: {found} identified, {len(args.queries) - found - failed} not in the "
               f"database, {failed} failed")
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return FAILED if failed else OK


def _result_json(query: str, r, rec) -> dict:
    best = r.best if r.in_database else None
    return {"file": query, "in_database": r.in_database, "song": best.name if best else None,
            "song_id": best.song_id if best else None, "offset_s": round(best.offset_s, 4) if best else None,
            "score": r.best.score if r.best else None, "confidence": r.confidence, "threshold": r.threshold,
            "decision": rec.decision, "reason": r.reason or None, "query_start_s": 0.0,
            "query_end_s": round(r.query_s, 4), "timings_ms": {k: round(v, 3) for k, v in r.timings_ms.items()},
            "matches": [{"song": m.name, "song_id": m.song_id, "offset_s": round(m.offset_s, 4), "score": m.score}
                        for m in r.matches]}


def _print_result(query: str, r) -> None:
    span = f"[0.0-{r.query_s:.1f} s]"
    conf = "" if r.confidence is None else f"confidence {r.confidence:.3f}"
    if r.threshold is not None and conf:
        conf += f" {'>=' if r.in_database else '<'} threshold {r.threshold:.3f}"
    elif conf:
        conf += ", no threshold"
    if not r.in_database:
        best = f"; best guess {r.best.name} at {r.best.offset_s:.1f} s" if r.best else ""
        print(f"{query} {span}: not in the database ({r.reason}{', ' + conf if conf else ''}{best})")
        return
    for rank, m in enumerate(r.matches):
        if rank == 0:
            print(f"{query} {span}: {m.name} at {m.offset_s:.1f} s (score {m.score:.3f}, {conf})")
        else:
            print(f"{query}   {rank + 1}. {m.name} at {m.offset_s:.1f} s (score {m.score:.3f})")


def listen_main(argv: list[str] | None = None) -> int:
    """Live recognition from a microphone or standard input: each song named as soon as it is recognised."""
    ap = Parser(
        prog="listen", description="Live recognition: name each song as soon as it is recognised (song, where it is "
        "now, seconds of audio needed, confidence), from a microphone or from audio on standard input.",
        epilog="examples: listen --model M --catalogue C --index I.index   (microphone); "
               "ffmpeg -i x.mp3 -f wav - | listen - ...;  arecord -f S16_LE -r 16000 -c 1 -t raw | listen - "
               "--format s16le --rate 16000 ...")
    ap.add_argument("source", nargs="?", default="mic", help="mic (default: the input device), - (standard "
                    "input: wav, flac, ogg, mp3 ... as FFmpeg decodes them, or raw PCM with --format), or a file")
    ap.add_argument("--model", default=None, help=f"checkpoint that made the catalogue (default: {SHIPPED})")
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
    ap.add_argument("--confirm", type=int, default=4, help="consecutive accepting hops (0.5 s) before an answer; "
                    "fewer answer sooner and falsely more often (default: 4)")
    ap.add_argument("--jump", type=float, default=1.5, help="an offset this far (s) from the expected one is a new "
                    "answer (default: 1.5)")
    ap.add_argument("--forget", type=float, default=4.0, help="report the song lost after this many seconds "
                    "without it (default: 4)")
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per search (default: as built)")
    ap.add_argument("--phases", type=int, default=None, help="query phases per 0.5-s hop (default: those the "
                    "threshold was calibrated with, else 1)")
    ap.add_argument("--decision", default=None, choices=["score", "margin"], help="what the threshold is compared "
                    "with (default: what it was calibrated with, else score)")
    args = _parse(ap, argv)
    if isinstance(args, int):
        return args
    if args.format and not args.rate:
        _err("--format needs --rate (raw PCM has no header to read it from)")
        return USAGE

    from fplib import listen, search

    try:
        rec = search.recognizer_from_files(args.model, args.catalogue, args.index, nprobe=args.nprobe,
                                           phases=args.phases, decision=args.decision)
        listener = listen.Listener(rec, window_s=args.window, change_s=args.change or None, confirm=args.confirm,
                                   jump_s=args.jump, forget_s=args.forget)
    except (*_input_errors(), RuntimeError) as e:
        _err(e)
        return USAGE
    print(f"threshold: {rec.threshold_source}; decision {rec.decision}, {rec.phases} phase(s)", file=sys.stderr)
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
            "generate_fingerprints": generate_fingerprints_main, "calibrate_threshold": calibrate_threshold_main,
            "db": db_main, "listen": listen_main, "build_corpus": build_corpus_main}


def _describe(name: str) -> str:
    doc = (COMMANDS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def main(argv: list[str] | None = None) -> int:
    """``fplib COMMAND [options]``: dispatch to a command (``fplib --help`` lists them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    width = max(len(n) for n in COMMANDS)
    listing = "\n".join(f"  {n:<{width}}  {_describe(n)}" for n in COMMANDS)
    usage = ("usage: fplib COMMAND [options]   (fplib COMMAND --help explains every option)\n\n"
             f"Neural audio fingerprinting.\n\ncommands:\n{listing}\n\n"
             "Identify your own music: generate_fingerprints, create_faiss_indexes, calibrate_threshold, recognize.\n"
             "Exit status: 0 done, 1 some inputs failed, 2 usage or input error.")
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(usage)
        return OK
    if not argv:
        print(usage, file=sys.stderr)
        return USAGE
    if argv[0] not in COMMANDS:
        print(f"fplib: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)} (fplib --help)", file=sys.stderr)
        return USAGE
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
