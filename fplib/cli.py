"""Command-line entry points: the seed's commands (README, "The seed") with their names, flags and
defaults, and fplib's own.

Every command is thin: a parser, a work function that calls ONE library function (which validates,
does the work, rolls back and raises the project's errors, :mod:`fplib.errors`) and prints its result,
and ``xxx_main(argv) -> exit code`` through :func:`_run`, which maps errors to exit codes in one place
(:func:`exit_code`). Long flags join words with ``_`` (the seed's spelling); ``-`` works as well
(:class:`Parser`). This module is over 600 lines because it holds nine commands' parsers with every
flag's help text; it does no work of its own, and keeping each command's flags beside its call reads
better than splitting them.

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
(nothing done; also a destination that cannot be written, found before the work), 130 interrupted
(rerun to continue), 141 standard output closed by its reader (``fplib db list | head``). Heavy
modules (torch, faiss) are imported only after the arguments are parsed, so ``--help`` and usage errors
are fast.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

OK, FAILED, USAGE = 0, 1, 2
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away (seq 1 1e6 | head)
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

    def error(self, message):
        for action in self._actions:  # argparse names a flag by all its spellings: not the hidden ones
            for alias in sorted(getattr(action, "hidden_aliases", ()), key=len, reverse=True):
                message = message.replace("/" + alias, "")
        super().error(message)

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
    from fplib.storage import DiskFullError, NotWritableError

    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(e, NotWritableError):
        return USAGE
    if isinstance(e, (DiskFullError, PartlyDone, NoUsableFiles)):
        return FAILED
    if isinstance(
        e,
        (
            BadFileError,
            Refused,
            ParameterError,
            FileNotFoundError,
            NotADirectoryError,
            FileExistsError,
            ValueError,
            KeyError,
        ),
    ):
        return USAGE
    return _late_exit_code(e)


def _late_exit_code(e: BaseException) -> int | None:
    """Errors of modules that import torch or faiss, checked only when already imported."""
    for module, names, code in (
        ("fplib.pretrained", ("PretrainedError",), USAGE),
        ("fplib.train", ("TrainingDiverged",), USAGE),
        ("fplib.corpus_packages", ("CorpusError",), FAILED),
        ("fplib.streams", ("ListenError",), USAGE),
        ("fplib.notebooks", ("NotebookFailed",), FAILED),
    ):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(e, tuple(getattr(mod, n) for n in names)):
            return code
    if isinstance(e, RuntimeError) and type(e).__module__.startswith("faiss"):
        return USAGE
    return None


def _run(parser: argparse.ArgumentParser, argv: list[str] | None, work, *, again: str = "", disk_full: str = "") -> int:
    """Every command: parse ``argv``, call ``work(args)`` (which prints and returns an exit code or None for
    0), and turn the project's errors into one ``error: ...`` line and their exit code (:func:`exit_code`).
    ``again`` says how to continue after an interruption or a full disk (e.g. ``"rerun the same command to
    continue"``); without it, nothing was changed. ``disk_full``: what to do after freeing space, where it
    says more than ``again``.

    A standard output closed by its reader (``fplib db list | head``) ends the command quietly with
    :data:`BROKEN_PIPE`, as for any Unix tool: what it writes to files is atomic, so stopping there is safe."""
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    from fplib.errors import PartlyDone, Refused
    from fplib.storage import DiskFullError, NotWritableError

    try:
        code = work(args)
        sys.stdout.flush()  # a closed pipe is found here, not by the interpreter's last flush
        return OK if code is None else code
    except BrokenPipeError:
        if not _stdout_closed():  # another pipe (a subprocess's): an error like any other
            raise
        _quiet_stdout()
        return BROKEN_PIPE
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
            _err(f"{e}; free some space, then {e.then or disk_full or again or 'run the same command again'}")
        elif isinstance(e, NotWritableError):
            _err(f"{e}; {e.consequence}")
        else:
            _err(e)
        return code


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (or not a real file, such as a test's
    stand-in, which raised the error itself)."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so that nothing more written to it (the interpreter's flush at
    exit included) raises BrokenPipeError again (Python's documentation, "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _parse(ap: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the exit code argparse chose (0 for --help, 2 for a usage error)."""
    try:
        return ap.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else USAGE


def _err(msg) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _plain_name(what: str):
    """An argparse ``type`` for an option that names files inside an output folder: a plain name, never a
    path (``../x`` or ``a/b`` would write outside the folder)."""

    def check(value: str) -> str:
        seps = {"/", "\\", os.sep, os.altsep} - {None}
        if not value or value in (".", "..") or any(c in value for c in seps) or "\0" in value:
            raise argparse.ArgumentTypeError(
                f"{value!r}: the {what} must be a plain name, not a path "
                f"(no '/' or '\\' in it, not '.' or '..'); choose the folder with -o"
            )
        return value

    return check


def _model_path(model: str | None) -> str:
    """``--model``: a checkpoint, or a shipped model by name (``fplib-small-v1``); none: the default shipped
    model (either checked against its card's checksum)."""
    from fplib import pretrained

    if model and (model not in pretrained.NAMES or os.path.exists(model)):
        return model
    return str(pretrained.default_model(name=model or None))


def _generate_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="generate_training_dataset",
        description="Write (clean, degraded) log-mel pairs of sampled seconds of every song: the static training set.",
    )
    ap.add_argument("-i", "--input_folder", required=True, help="folder of songs (wav, flac, ogg, opus, mp3)")
    ap.add_argument(
        "-n", "--number_segments", type=int, default=5, help="1-s segments sampled from each song (default: 5)"
    )
    ap.add_argument(
        "-tr",
        "--train_ratio",
        type=float,
        default=0.8,
        help="share of songs for training, the rest for validation (default: 0.8)",
    )
    ap.add_argument("-ir", "--impulse_response", default=None, help="folder of room impulse responses (default: none)")
    ap.add_argument("-bn", "--background_noise", default=None, help="folder of background noises (default: none)")
    ap.add_argument("-o", "--output_path", default=".", help="where Dataset_<N>/ is written (default: current folder)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ap.add_argument("--f_min", type=float, default=300.0, help="lowest mel frequency in Hz (default: 300)")
    ap.add_argument("--samples", type=int, default=3, help="training songs written as audio to Samples/ (default: 3)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing dataset with other settings")
    ap.add_argument("--device", default="cpu", help="torch device for augmentation and features (default: cpu)")
    return ap


def _generate_training_dataset(args: argparse.Namespace) -> None:
    from fplib.errors import PartlyDone
    from fplib.features import FrontEnd
    from fplib.generate import GenerateConfig, generate_dataset

    cfg = GenerateConfig(
        number_segments=args.number_segments, train_ratio=args.train_ratio, seed=args.seed, n_sample_songs=args.samples
    )
    result = generate_dataset(
        args.input_folder,
        args.output_path,
        args.impulse_response,
        args.background_noise,
        cfg=cfg,
        fe=FrontEnd(f_min=args.f_min),
        overwrite=args.overwrite,
        device=args.device,
    )
    if not result.complete:
        raise PartlyDone(f"{result.path}: the dataset is not complete; rerun the same command to resume")
    print(f"{result.path}: {result.n_train} training and {result.n_val} validation pairs")
    if result.skipped:
        print(f"{len(result.skipped)} file(s) skipped:")
        for path, reason in result.skipped:
            print(f"  {path}: {reason}")


def generate_training_dataset_main(argv: list[str] | None = None) -> int:
    """Write the static training set: (clean, degraded) log-mel pairs of sampled seconds of songs."""
    return _run(
        _generate_parser(),
        argv,
        _generate_training_dataset,
        again="rerun the same command to resume",
        disk_full="rerun the same command to resume (nothing already written was lost)",
    )


def _trainer_options(ap: argparse.ArgumentParser, defaults: bool) -> None:
    """The options common to every trainer mode, with TrainConfig's defaults (fplib.train_config: a family
    setting's default None lets the architecture's registry entry decide). On the main parser they carry the
    defaults; on each mode's parser (so that they may follow the mode) they are suppressed unless given, so a
    mode's parser never overwrites a value given before the mode."""
    from fplib.models import registry
    from fplib.train_config import OPTIMISERS, default, family_settings

    family = family_settings()

    def d(value):
        return value if defaults else argparse.SUPPRESS

    def setting(name: str):  # a TrainConfig setting: its default, and how --help says it
        if name in family:
            return d(None), f"(default: the architecture's, else {family[name]:g})" if isinstance(
                family[name], float
            ) else f"(default: the architecture's, else {family[name]})"
        return d(default(name)), f"(default: {default(name)})"

    v, say = setting("epochs")
    ap.add_argument("-ep", "--epochs", type=int, default=v, help=f"maximum epochs; early stopping may end sooner {say}")
    v, say = setting("batch_size")
    ap.add_argument("-bs", "--batch_size", type=int, default=v, help=f"global batch of pairs {say}")
    ap.add_argument(
        "-m",
        "--model_name",
        default=d("fingerprinter"),
        type=_plain_name("model name"),
        help="name of the saved model: OUT/NAME.pt (best) and the run folder OUT/NAME/ (default: fingerprinter)",
    )
    v, say = setting("optim")
    ap.add_argument(
        "--optim", default=v, choices=[*OPTIMISERS, *(o.lower() for o in OPTIMISERS)], help=f"optimiser {say}"
    )
    ap.add_argument("-o", "--output_path", default=d("."), help="where the model is saved (default: current folder)")
    ap.add_argument(
        "--arch",
        default=d(default("model")),
        choices=registry.model_names(),
        help=f"architecture: {registry.describe()} (default: {default('model')})",
    )
    v, say = setting("temperature")
    ap.add_argument("--temperature", type=float, default=v, help=f"contrastive temperature {say}")
    v, say = setting("lr")
    ap.add_argument("--lr", type=float, default=v, help=f"learning rate at --lr_ref_batch {say}")
    v, say = setting("lr_ref_batch")
    ap.add_argument("--lr_ref_batch", type=int, default=v, help=f"the lr scales by batch_size / this {say}")
    v, say = setting("patience")
    ap.add_argument("--patience", type=int, default=v, help=f"early-stopping patience in epochs {say}")
    v, say = setting("seed")
    ap.add_argument("--seed", type=int, default=v, help=f"random seed of the weights, batches and degradations {say}")
    v, say = setting("num_workers")
    ap.add_argument("--workers", type=int, default=v, help=f"DataLoader worker processes, dynamic modes {say}")
    v, say = setting("items_per_song")
    ap.add_argument("--items_per_song", type=int, default=v, help=f"dynamic modes: segments per song per epoch {say}")
    v, say = setting("val_items_per_song")
    ap.add_argument(
        "--val_items_per_song",
        type=int,
        default=v,
        help=f"dynamic modes: fixed validation segments per validation song {say}",
    )
    ap.add_argument("--f_min", type=float, default=d(300.0), help="lowest mel frequency in Hz (default: 300)")
    ap.add_argument(
        "--model_settings",
        default=d("{}"),
        help="JSON overrides of the architecture's settings, e.g. '{\"width\": 0.5}' (default: the architecture's own)",
    )
    ap.add_argument(
        "--preload",
        action="store_true",
        default=d(default("preload")),
        help="dynamic modes: decode the songs once and hold them in memory (faster, 4 bytes per sample at 8 kHz)",
    )
    ap.add_argument(
        "--augment",
        default=d("{}"),
        help="dynamic modes: JSON overrides of AugmentConfig, e.g. '{\"snr_db\": [0, 10]}' (default: none)",
    )
    ap.add_argument("--device", default=d("auto"), help="auto, cpu, cuda, cuda:1 ... (default: auto)")
    ap.add_argument(
        "--no_amp",
        action="store_true",
        default=d(not default("amp")),
        help="train in full precision on a GPU (default: mixed)",
    )
    ap.add_argument(
        "--resume", action="store_true", default=d(False), help="continue the run in OUT/NAME/ where it stopped"
    )
    ap.add_argument(
        "--init",
        default=d(None),
        help="start from the weights of this checkpoint (fine-tuning: new "
        "optimiser and schedule; same --arch and --model_settings; use another --seed than the run it "
        "comes from, or the same segments and degradations are drawn again) (default: random weights)",
    )


# the trainer's options that are paths: recorded with the run as absolute paths, however they were typed
_TRAINER_PATHS = (
    "output_path",
    "init",
    "train_path",
    "val_path",
    "train_ir",
    "train_bn",
    "val_ir",
    "val_bn",
    "path",
    "impulse_responses",
    "background_noises",
)


def _trainer_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="trainer",
        description="Contrastive training of the neural fingerprinter. Common options go before or after the mode.",
    )
    _trainer_options(ap, defaults=True)
    common = Parser(add_help=False)
    _trainer_options(common, defaults=False)
    modes = ap.add_subparsers(dest="mode", required=True, metavar="{static,dynamic,dynamic_online}")
    st = modes.add_parser(
        "static",
        parents=[common],
        help="train on pairs written by generate_training_dataset",
        description="Train on (clean, degraded) pairs written by generate_training_dataset.",
    )
    st.add_argument("-tp", "--train_path", required=True, help="folder of training pairs (Dataset_N/train_set)")
    st.add_argument("-vp", "--val_path", required=True, help="folder of validation pairs (Dataset_N/val_set)")
    dy = modes.add_parser(
        "dynamic",
        parents=[common],
        help="online augmentation from already split folders",
        description="Degrade songs on the fly with rooms and noises, from already split folders.",
    )
    dy.add_argument("-tp", "--train_path", required=True, help="training songs")
    dy.add_argument("-tr", "--train_ir", default=None, help="training impulse responses (default: none)")
    dy.add_argument("-tb", "--train_bn", default=None, help="training background noises (default: none)")
    dy.add_argument("-vp", "--val_path", required=True, help="validation songs")
    dy.add_argument("-vr", "--val_ir", default=None, help="validation impulse responses (default: none)")
    dy.add_argument("-vb", "--val_bn", default=None, help="validation background noises (default: none)")
    do = modes.add_parser(
        "dynamic_online",
        parents=[common],
        help="split folders into OUT/online_data/, then train as dynamic",
        description="Split songs, rooms and noises into OUT/online_data/{train,val} (links), then train as dynamic.",
    )
    do.add_argument("-p", "--path", required=True, help="songs")
    do.add_argument("-ir", "--impulse_responses", required=True, help="impulse responses")
    do.add_argument("-bn", "--background_noises", required=True, help="background noises")
    do.add_argument("-tr", "--train_ratio", type=float, default=0.8, help="share for training (default: 0.8)")
    return ap


def _trainer(args: argparse.Namespace) -> None:
    from pathlib import Path

    from fplib.sources import OnlineFolders, PairFolders, UnsplitFolders
    from fplib.trainer import run_trainer

    if args.mode == "static":
        data = PairFolders(args.train_path, args.val_path)
    elif args.mode == "dynamic":
        data = OnlineFolders(args.train_path, args.val_path, args.train_ir, args.train_bn, args.val_ir, args.val_bn)
    else:
        data = UnsplitFolders(args.path, args.impulse_responses, args.background_noises, args.train_ratio)
    settings = dict(
        model=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optim=args.optim,
        lr=args.lr,
        lr_ref_batch=args.lr_ref_batch,
        patience=args.patience,
        seed=args.seed,
        num_workers=args.workers,
        items_per_song=args.items_per_song,
        val_items_per_song=args.val_items_per_song,
        preload=args.preload,
        amp=not args.no_amp,
        model_settings=json.loads(args.model_settings),
        temperature=args.temperature,
    )
    result = run_trainer(
        settings,
        data,
        args.output_path,
        args.model_name,
        augment=json.loads(args.augment),
        f_min=args.f_min,
        device=args.device,
        resume=args.resume,
        init=args.init,
        run_params={
            k: str(Path(v).resolve()) if k in _TRAINER_PATHS and v else v
            for k, v in vars(args).items()
            if k != "resume"
        },
    )
    if result.checkpoint is None:
        return
    if result.failed:
        print(
            f"{len(result.failed)} song(s) failed to decode during training; their segments were left out:",
            file=sys.stderr,
        )
        for path, reason in result.failed:
            print(f"  {path}: {reason}", file=sys.stderr)
    print(f"best model: {result.checkpoint} (run folder {result.run_dir})")


def trainer_main(argv: list[str] | None = None) -> int:
    """Train the neural fingerprinter (static pairs, or online augmentation)."""
    return _run(
        _trainer_parser(),
        argv,
        _trainer,
        again="continue with the same command plus --resume (nothing already written was lost)",
    )


def _create_faiss_indexes_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="create_faiss_indexes",
        description="Build a faiss index over a catalogue "
        "of fingerprints: NAME.index, NAME.json ({first vector id: song}), NAME.meta.json.",
    )
    ap.add_argument(
        "-i",
        required=True,
        metavar="CATALOGUE",
        help="the fingerprints: a catalogue folder (generate_fingerprints or notebook 04)",
    )
    ap.add_argument(
        "-n",
        required=True,
        metavar="NAME",
        type=_plain_name("index name"),
        help="name of the index files: NAME.index, NAME.json, NAME.meta.json in the -o folder (a plain "
        "name, not a path)",
    )
    ap.add_argument(
        "-m",
        type=int,
        default=32,
        help="PQ sub-quantisers, bytes per stored vector (default: 32; binary codes are stored whole)",
    )
    ap.add_argument("-d", type=int, default=128, help="fingerprint dimension, in bits for binary codes (default: 128)")
    ap.add_argument(
        "-nlist", type=int, default=256, help="IVF lists, reduced automatically for small catalogues (default: 256)"
    )
    ap.add_argument(
        "--factory",
        default=None,
        help="any faiss index-factory string instead, e.g. IVF1024,PQ64, "
        "or for binary codes BFlat (exact Hamming search) or BIVF1024 (default: IVF<nlist>,PQ<m>; binary "
        "codes: BIVF<nlist>)",
    )
    ap.add_argument("--nprobe", type=int, default=40, help="IVF lists visited per search (default: 40)")
    ap.add_argument("-o", "--output_path", default=".", help="folder for the index files (default: current folder)")
    return ap


def _create_faiss_indexes(args: argparse.Namespace) -> None:
    from fplib import db

    built = db.build_index(
        args.i, args.n, args.output_path, m=args.m, d=args.d, nlist=args.nlist, factory=args.factory, nprobe=args.nprobe
    )
    print(f"{built.path} and {built.path.with_suffix('.json')}: {built.songs} songs")
    for c in built.copies:
        print(c.line())
    print(f"next: calibrate_threshold --catalogue {args.i} --index {built.path}")


def create_faiss_indexes_main(argv: list[str] | None = None) -> int:
    """Build a faiss index over a catalogue of fingerprints."""
    return _run(_create_faiss_indexes_parser(), argv, _create_faiss_indexes, again="run the same command again")


def _print_skipped(skipped: list[tuple[str, str]], what: str = "skipped", limit: int | None = None) -> None:
    """List files with the reason on stderr (the first ``limit`` of them, if given)."""
    if skipped:
        print(f"{len(skipped)} file(s) {what}:", file=sys.stderr)
        for path, reason in skipped[:limit]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if limit is not None and len(skipped) > limit:
            print(f"  ... and {len(skipped) - limit} more", file=sys.stderr)


def _print_changes(added, replaced, duplicates, copies, limit: int | None = 10) -> None:
    """Name what a command did to a catalogue (the first ``limit`` of each): songs ``added``, ``replaced``
    (``(new, old)``: other audio under the same name), ``duplicates`` (``(file or song, song there)``: the same
    audio under another name, not added), and every pair of near-identical songs found (``copies``)."""
    for s in added[:limit]:
        print(f"added: {s.name} (song {s.id}, {s.duration:.1f} s)")
    if limit is not None and len(added) > limit:
        print(f"added: ... and {len(added) - limit} more (fplib db list)")
    for new, old in replaced:
        print(f"replaced: {new.name} (song {old.id} -> {new.id}: other audio under this name, {new.path})")
    _print_skipped(
        [(getattr(f, "name", f), f"the same audio as song {s.id} {s.name!r}") for f, s in duplicates],
        "not added: duplicate(s) of songs there",
    )
    if copies is None:
        print(
            "near-identical songs: not looked for yet (a catalogue this large is compared through its index): "
            "create_faiss_indexes looks for them"
        )
    for c in copies or ():
        print(c.line())


def _print_ignored(ignored: list[str]) -> None:
    """Non-audio files by name, and links to folders not followed (a loop) with their reason (collect_audio)."""
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        print(
            f"{len(ignored)} other path(s) ignored (not an audio extension, or a link not followed): {shown}",
            file=sys.stderr,
        )


def _generate_fingerprints_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="generate_fingerprints",
        description="Fingerprint songs (every 0.5 s, 128-d) into a catalogue folder, for create_faiss_indexes. "
        "Folders are scanned recursively; audio already in the catalogue is skipped, so an "
        "interrupted run continues where it stopped when run again. A song is named by its path under the "
        "folder given: a file replaced under its name replaces its song; another file of a name already "
        "there is skipped (listed).",
        epilog="exit status: 0 done, 1 some files were skipped (listed with the reason), 2 usage or input error",
    )
    ap.add_argument(
        "-i",
        "--input",
        required=True,
        nargs="+",
        metavar="SONGS",
        help="folders (scanned recursively) and/or audio files: wav, flac, ogg, opus, mp3, aiff, "
        "m4a, aac, mp4, webm, wma, ...; a song is named by its path under the folder given",
    )
    ap.add_argument(
        "-o",
        "--output",
        "--catalogue",
        dest="catalogue",
        required=True,
        metavar="CATALOGUE",
        help="catalogue folder, created if missing, else added to (same model only)",
    )
    ap.add_argument("--model", default=None, help=f"checkpoint that computes the fingerprints (default: {SHIPPED})")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default: cpu)")
    ap.add_argument("--batch", type=int, default=256, help="windows per forward pass (default: 256)")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes decoding songs beside the network (default: 1 on a multi-core machine)",
    )
    ap.add_argument(
        "--store_dtype",
        choices=("float32", "float16"),
        default=None,
        help="how a new catalogue stores float fingerprints: float16 halves the disk and memory "
        "re-ranking reads (default: float32; an existing catalogue must be given its own, or "
        "converted with fplib db compact --dtype)",
    )
    ap.add_argument("--no_progress", action="store_true", help="no progress bar")
    return ap


def _generate_fingerprints(args: argparse.Namespace) -> int:
    from fplib import extraction

    t0 = time.perf_counter()
    result = extraction.fingerprint_folders(
        args.input,
        args.catalogue,
        _model_path(args.model),
        device=args.device,
        batch=args.batch,
        workers=args.workers,
        store_dtype=args.store_dtype,
        progress=not args.no_progress,
    )
    if result.rank:  # under torchrun, rank 0 reports the whole run
        return OK
    added_s = sum(s.duration for s in result.added + [n for n, _ in result.replaced])
    print(
        f"{args.catalogue}: {len(result.added)} song(s) added ({added_s / 60:.1f} min), {len(result.replaced)} "
        f"replaced, {len(result.already)} already there, {len(result.duplicates)} duplicate(s) of songs there, "
        f"{len(result.skipped)} skipped; {result.songs} songs ({result.seconds / 60:.1f} min) in the catalogue "
        f"[{time.perf_counter() - t0:.1f} s]"
    )
    _print_changes(result.added, result.replaced, result.duplicates, result.copies)
    _print_skipped([(f, "its audio is already in the catalogue") for f in result.already], "already there", 10)
    _print_skipped(result.skipped)
    _print_ignored(result.ignored)
    if result.added or result.replaced:
        print(
            f"next: create_faiss_indexes -i {args.catalogue} -n NAME -o INDEX_FOLDER (or fplib db add, to add "
            f"songs to an existing index)"
        )
    return FAILED if result.skipped else OK


def generate_fingerprints_main(argv: list[str] | None = None) -> int:
    """Fingerprint a folder of songs into a catalogue (resumable)."""
    return _run(
        _generate_fingerprints_parser(),
        argv,
        _generate_fingerprints,
        again="run the same command again to continue (fingerprinted songs are kept)",
    )


def _calibrate_threshold_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="calibrate_threshold",
        description="Calibrate the threshold that decides 'not in the database' for this catalogue and index, "
        "for a stated false-positive rate: queries of several lengths are cut from audio that is "
        "NOT in the catalogue, degraded with rooms and noises, and recognised; the threshold is fitted "
        "on half of that audio and its false-positive rate measured on the other half. Writes "
        "NAME.threshold.json next to NAME.index, which recognize reads.",
        epilog="exit status: 0 done, 1 the held-back false-positive rate missed the target (nothing written), "
        "2 usage or input error",
    )
    ap.add_argument("--catalogue", required=True, help="catalogue folder (generate_fingerprints)")
    ap.add_argument("--index", required=True, help="NAME.index (create_faiss_indexes)")
    ap.add_argument(
        "--negatives",
        nargs="+",
        default=None,
        metavar="FOLDER",
        help="folders/files of music that is not in the catalogue, ideally like what will be queried "
        "(at least 2 files; default: the held-out songs of the real training corpus, with its "
        "held-out rooms and noises, when build_corpus (make corpus) has made it in "
        "outputs/corpus; else built-in synthetic songs, generated once and cached, of which "
        "--builtin_songs)",
    )
    ap.add_argument(
        "--accept_miss",
        action="store_true",
        help="write the threshold even when the false-positive "
        "rate measured on the held-back half misses the target (by default it is then not written)",
    )
    ap.add_argument(
        "--fpr",
        type=float,
        default=0.05,
        help="false-positive rate aimed at: the share of out-of-database queries accepted (default: 0.05)",
    )
    ap.add_argument("--model", default=None, help=f"the checkpoint that made the catalogue (default: {SHIPPED})")
    ap.add_argument(
        "--phases", type=int, default=4, help="query phases per 0.5-s hop that recognize will use (default: 4)"
    )
    ap.add_argument(
        "--decision",
        default="margin",
        choices=["score", "margin"],
        help="compare the threshold with "
        "the best song's score, or with its margin over the next song (default: margin)",
    )
    ap.add_argument(
        "--lengths",
        type=float,
        nargs="+",
        default=[1.0, 2.0, 3.0, 5.0, 10.0],
        metavar="S",
        help="query lengths in seconds; other lengths interpolate (default: 1 2 3 5 10)",
    )
    ap.add_argument(
        "--snrs",
        type=float,
        nargs="+",
        default=[0.0, 5.0, 10.0, 15.0],
        metavar="DB",
        help="signal-to-noise ratios of the added noise in dB (default: 0 5 10 15)",
    )
    ap.add_argument(
        "--queries",
        type=int,
        default=None,
        help="queries per (length, SNR) in each half (default: 40 "
        "with the real corpus's held-out songs: a few dozen songs need that many for the held-back rate to "
        "hold; 10 otherwise)",
    )
    ap.add_argument("--noise_only", type=int, default=4, help="noise-only queries per length in each half (default: 4)")
    ap.add_argument(
        "--rooms", default=None, help="folder of room impulse responses (default: built-in simulated rooms)"
    )
    ap.add_argument("--noises", default=None, help="folder of background noises (default: built-in noises)")
    ap.add_argument(
        "--builtin_songs", type=int, default=24, help="songs in the built-in negative corpus (default: 24, 30 s each)"
    )
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per search (default: as built)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the query positions, rooms and noises (default: 0)")
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ap.add_argument("--no_progress", action="store_true", help="no progress bars")
    return ap


def _print_calibration(cal) -> None:
    """The per-length table of a calibration (fplib.calibrate.Calibration), missed lengths marked."""
    print(f"{'length':>8} {'windows':>7} {'threshold':>9} {'FPR (held-back)':>16}")
    for r in cal.per_length:
        fpr = "n/a" if r.fpr is None else f"{r.fpr:.1%} of {r.n_test}"
        print(
            f"{r.length_s:>7g}s {r.windows:>7d} {r.threshold:>9.3f} {fpr:>16}"
            + ("  <- misses the target" if r in cal.missed else "")
        )


def _calibrate_threshold(args: argparse.Namespace) -> int | None:
    from fplib import calibrate

    try:
        done = calibrate.calibrate_index(
            args.catalogue,
            args.index,
            model=args.model,
            negatives=args.negatives,
            rooms=args.rooms,
            noises=args.noises,
            fpr=args.fpr,
            phases=args.phases,
            decision=args.decision,
            lengths=tuple(args.lengths),
            snrs=tuple(args.snrs),
            queries=args.queries,
            noise_only=args.noise_only,
            builtin_songs=args.builtin_songs,
            nprobe=args.nprobe,
            seed=args.seed,
            device=args.device,
            accept_miss=args.accept_miss,
            progress=not args.no_progress,
            show=_print_calibration,  # before the threshold is written: a failed write loses no result
        )
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return INTERRUPTED
    cal, neg = done.calibration, done.calibration.negatives
    overall = "n/a" if cal.measured_fpr is None else f"{cal.measured_fpr:.1%}"
    print(
        f"{done.path}: decision {cal.decision}, {cal.phases} phases; false-positive rate aimed at {args.fpr:.1%}, "
        + (
            f"measured {overall} held back in both directions between two halves of "
            f"{len(neg.calibration)} and {len(neg.test)} files, fitted on both"
            if neg.cross_fit
            else f"measured {overall} on {len(neg.test)} held-back files (fitted on {len(neg.calibration)})"
        )
        + f" [{done.seconds:.1f} s]"
    )
    _print_skipped(neg.skipped, "left out of the negatives")
    return None


def calibrate_threshold_main(argv: list[str] | None = None) -> int:
    """Calibrate "not in the database" for a catalogue and index (writes NAME.threshold.json)."""
    return _run(_calibrate_threshold_parser(), argv, _calibrate_threshold, again="run the same command again")


def _build_corpus_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="build_corpus",
        description="Build the training corpus of recorded music, ambience and loudspeaker responses from "
        "openly licensed Debian packages: fetched with apt-get download, unpacked with dpkg-deb -x "
        "(nothing installed), decoded, down-mixed and resampled to 8 kHz, de-duplicated (copies, loops "
        "and sped-up versions of a track, found by fingerprinting) and split into train and val by "
        "song. Resumable: rerun the same command after an interruption. Writes OUT/manifest.json "
        "(package, version, file, sha256 of the decoded audio, seconds, licence, split of every file).",
        epilog="exit status: 0 done, 1 a package could not be fetched or unpacked, 2 usage error, 130 interrupted",
    )
    ap.add_argument("-o", "--output", default=None, help="corpus folder (default: outputs/corpus)")
    ap.add_argument(
        "--debs", default=None, help="folder of downloaded .deb files, reused when present (default: OUTPUT/debs)"
    )
    ap.add_argument(
        "--packages",
        nargs="+",
        default=None,
        metavar="PACKAGE",
        help="only these packages (default: all of them; --list prints them)",
    )
    ap.add_argument("--list", action="store_true", help="print the packages and what each gives, then exit")
    ap.add_argument("--no_dedupe", action="store_true", help="skip the search for duplicate tracks")
    ap.add_argument(
        "--model",
        default=None,
        help="the model that fingerprints tracks to find copies "
        "(default: the shipped fplib-small-v1, whatever the default model is: the corpus stays the same)",
    )
    ap.add_argument("--no_progress", action="store_true", help="no progress bars")
    return ap


def _build_corpus(args: argparse.Namespace) -> None:
    from fplib import corpus

    if args.list:
        for s in corpus.SOURCES:
            what = " ".join(s.include) or "the works of music21's own corpus that state an open licence"
            print(f"{s.package:28s} {s.role:6s} {what}")
        return
    corpus.build(
        args.output,
        args.debs,
        args.packages,
        dedupe=not args.no_dedupe,
        model_path=args.model,
        progress=not args.no_progress,
    )


def build_corpus_main(argv: list[str] | None = None) -> int:
    """Build the real training corpus from Debian packages (``make corpus``): fplib.corpus."""
    return _run(
        _build_corpus_parser(),
        argv,
        _build_corpus,
        again="what was decoded is kept: run the same command again to continue",
    )


def _db_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="fplib db",
        description="Manage the songs of a catalogue and its index without rebuilding: add, remove, "
        "list, compact. Changes are all or nothing.",
        epilog="exit status: 0 done, 1 failed while writing (rolled back) or, for verify, damage found, 2 usage "
        "or input error (nothing changed)",
    )
    sub = ap.add_subparsers(dest="action", required=True, metavar="{add,remove,list,compact,merge,verify}")
    common = Parser(add_help=False)
    common.add_argument("--catalogue", required=True, help="catalogue folder (generate_fingerprints)")
    add = sub.add_parser(
        "add",
        parents=[common],
        help="fingerprint songs into the catalogue and add them to the index",
        description="Fingerprint songs into the catalogue and add them to the index, all or none: "
        "an unreadable file, audio already in the catalogue, a file given twice or a "
        "name already taken (without --replace) refuses the whole addition. A song's name is its path "
        "under the folder given, without the extension (or the file's name).",
    )
    add.add_argument("--index", required=True, help="NAME.index built from the catalogue (create_faiss_indexes)")
    add.add_argument(
        "songs",
        nargs="+",
        help="audio files and/or folders (recursive; a song is named by its path "
        "under the folder given, or by its file name)",
    )
    add.add_argument("--model", default=None, help=f"the catalogue's model (default: {SHIPPED})")
    add.add_argument(
        "--replace",
        action="store_true",
        help="a song named like one in the catalogue replaces it (its fingerprints, in the catalogue and the index)",
    )
    add.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add.add_argument("--no_progress", action="store_true", help="no progress bar")
    rm = sub.add_parser(
        "remove",
        parents=[common],
        help="remove songs, by name or id",
        description="Remove songs from the catalogue and the index, all or none.",
    )
    rm.add_argument("--index", required=True, help="NAME.index built from the catalogue")
    rm.add_argument("songs", nargs="+", help="song names (as listed) or numeric ids")
    ls = sub.add_parser("list", parents=[common], help="list the songs", description="List the catalogue's songs.")
    ls.add_argument("--index", default=None, help="also check that NAME.index matches the catalogue")
    ls.add_argument("--json", action="store_true", help="one JSON object per song per line")
    co = sub.add_parser(
        "compact",
        parents=[common],
        help="rewrite the vector store without removed songs",
        description="Copy the live songs' fingerprints into a new vector store and switch to it "
        "atomically (frees removed songs' rows; indexes stay valid). Also converts a "
        "catalogue made by an older fplib, and the store's dtype with --dtype.",
    )
    co.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default=None,
        help="convert a float catalogue's store (default: keep it)",
    )
    co.add_argument("--no_progress", action="store_true", help="no progress bar")
    me = sub.add_parser(
        "merge",
        parents=[common],
        help="add the songs of other catalogues (shards) to this one",
        description="Add every song of other catalogues made by the same model (e.g. shards "
        "extracted on other machines) to this catalogue, created if missing; audio "
        "already there is skipped, so an interrupted merge resumes; under another name it is not added, "
        "and listed. A name already there with other audio refuses the whole merge, unless --replace. "
        "Then build the index with create_faiss_indexes.",
    )
    me.add_argument("shards", nargs="+", help="catalogue folders to merge, in this order")
    me.add_argument(
        "--replace",
        action="store_true",
        help="a song named like one already there (or in an earlier catalogue given), with other audio, replaces it",
    )
    me.add_argument("--no_progress", action="store_true", help="no progress bar")
    ve = sub.add_parser(
        "verify",
        parents=[common],
        help="check the catalogue (and an index) in depth",
        description="Check what is stored, in depth: SQLite's integrity_check of catalogue.sqlite, the "
        "vector store's size, every song's fingerprints against the checksum recorded when they were "
        "stored; with --index, the index file against its recorded checksum, the index against the "
        "catalogue, and a re-score of 256 of the catalogue's windows in it. One line per check: ok, "
        "damaged, or not recorded (written by an older fplib: the line says how to record it). Exit "
        "status 1 if anything is damaged.",
    )
    ve.add_argument("--index", default=None, help="also check NAME.index built from the catalogue")
    return ap


def _db(args: argparse.Namespace) -> int | None:
    from fplib import db

    if args.action == "add":
        added = db.add(
            args.catalogue,
            args.index,
            args.songs,
            _model_path(args.model),
            device=args.device,
            progress=not args.no_progress,
            replace=args.replace,
        )
        if added.recovered:
            print(added.recovered)
        for s in added.added:
            print(f"added {s.id}: {s.name} ({s.duration:.1f} s)")
        _print_changes([], added.replaced, [], added.copies)
        print(
            f"{len(added.added)} song(s) added, {len(added.replaced)} replaced; {added.songs} in {args.catalogue} "
            f"and {args.index}"
        )
        _print_ignored(added.ignored)
    elif args.action == "merge":
        merged = db.merge(args.catalogue, args.shards, progress=not args.no_progress, replace=args.replace)
        print(
            f"{args.catalogue}: {len(merged.added)} song(s) added from {len(args.shards)} catalogue(s); "
            f"{merged.songs} songs in the catalogue; {len(merged.replaced)} replaced, {merged.unchanged} already "
            f"there, {len(merged.duplicates)} duplicate(s) of songs there"
        )
        _print_changes(merged.added, merged.replaced, merged.duplicates, merged.copies)
        if merged.added or merged.replaced:
            print(f"next: create_faiss_indexes -i {args.catalogue} -n NAME -o INDEX_FOLDER")
    elif args.action == "compact":
        c = db.compact(args.catalogue, args.dtype, progress=not args.no_progress)
        was = f"{_size(c.bytes_before)} -> " if c.bytes_before is not None else "converted from one file per song; "
        print(
            f"{args.catalogue}: {c.songs} songs, {c.rows} rows of {c.dtype} in {c.file} ({was}{_size(c.bytes_after)})"
        )
    elif args.action == "verify":
        checks = db.verify(args.catalogue, args.index)
        for check in checks:
            print(check.line())
        return FAILED if any(check.ok is False for check in checks) else None
    elif args.action == "list":
        songs = db.list_songs(args.catalogue, args.index)
        for s in songs:
            if args.json:
                print(
                    json.dumps(
                        {
                            "id": s.id,
                            "name": s.name,
                            "duration_s": round(s.duration, 3),
                            "vectors": s.n_vectors,
                            "path": s.path,
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                print(f"{s.id:6d}  {s.duration:8.1f} s  {s.name}  ({s.path})")
        total = sum(s.duration for s in songs)
        note = f"; {args.index} matches it" if args.index else ""
        print(f"{len(songs)} songs, {total / 60:.1f} min{note}", file=sys.stderr)
    else:  # remove
        removed = db.remove(args.catalogue, args.index, args.songs)
        if removed.recovered:
            print(removed.recovered)
        for s in removed.removed:
            print(f"removed {s.id}: {s.name}")
        print(f"{len(removed.removed)} song(s) removed; {removed.songs} left")
    return None


def db_main(argv: list[str] | None = None) -> int:
    """Add, remove or list songs of a catalogue and its index (no rebuild)."""
    return _run(_db_parser(), argv, _db, again="run the same command again")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _recognize_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="recognize",
        description="Identify recordings: the song, where in it the recording starts, the score "
        "and the confidence, or 'not in the database'.",
        epilog="The threshold comes from NAME.threshold.json next to the index (calibrate_threshold), else from the "
        "shipped model's card when the catalogue was made by the shipped model; otherwise recognize refuses "
        "to decide (run calibrate_threshold, or pass --no-threshold). Exit status: 0 every query answered, "
        "1 some queries could not be read (listed), 2 usage or input error. A recording longer than 3 minutes "
        "is answered for its first 3 minutes; --segments lists every song of a recording of any length.",
    )
    ap.add_argument(
        "queries", nargs="+", help="recordings (1 s or longer): wav, flac, mp3, m4a, aac, ogg, opus, webm, ..."
    )
    ap.add_argument(
        "--segments",
        action="store_true",
        help="every song in each recording, of any length (a broadcast, a DJ set): one line per segment, song, "
        "start and end in the recording, offset in the song, confidence, and the unknown stretches between "
        "(with --json one object per segment: file, song (null when unknown), song_id, start_s, end_s, offset_s, "
        "confidence, threshold); memory does not grow with the recording",
    )
    ap.add_argument("--no_progress", action="store_true", help="--segments: no progress bar")
    ap.add_argument("--model", default=None, help=f"checkpoint that made the catalogue (default: {SHIPPED})")
    ap.add_argument("--catalogue", required=True, help="catalogue folder (generate_fingerprints)")
    ap.add_argument(
        "--index", required=True, help="NAME.index (create_faiss_indexes); its NAME.threshold.json is used if present"
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per query per line (file, in_database, "
        "song, offset_s, score, confidence, threshold, query_start_s, query_end_s, timings_ms, matches)",
    )
    ap.add_argument(
        "--no-threshold",
        "--no_threshold",
        dest="no_threshold",
        action="store_true",
        help="accept every query as in the database (no 'not in the database' decision)",
    )
    ap.add_argument(
        "--method",
        default="sequence",
        choices=["sequence", "vote"],
        help="sequence: align and re-score "
        "the query's windows (NAFP); vote: majority vote of the windows' neighbours (default: sequence)",
    )
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per search (default: as built)")
    ap.add_argument("--top", type=int, default=3, help="best songs shown per query (default: 3)")
    ap.add_argument(
        "--phases",
        type=int,
        default=None,
        help="query phases per 0.5-s hop (fplib.search; default: those the threshold was calibrated with, else 1)",
    )
    ap.add_argument(
        "--decision",
        default=None,
        choices=["score", "margin"],
        help="what the threshold is compared with (default: what it was calibrated with, else score)",
    )
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return ap


def _recognize(args: argparse.Namespace) -> int:
    from fplib import search

    rec = search.recognizer_from_files(
        args.model,
        args.catalogue,
        args.index,
        no_threshold=args.no_threshold,
        nprobe=args.nprobe,
        phases=args.phases,
        decision=args.decision,
        device=args.device,
    )
    note = f"threshold: {rec.threshold_source}; decision {rec.decision}, {rec.phases} phase(s)"
    print(note, file=sys.stderr if args.json else sys.stdout)
    if args.segments:
        return _print_segments(rec, args)
    answers = search.Recognitions(rec, args.queries, method=args.method, top=args.top)
    for answer in answers:
        if args.json:
            print(json.dumps(answer.to_json(), ensure_ascii=False))
        if answer.error is not None:
            print(*answer.lines(), file=sys.stderr)
        elif not args.json:
            print(*answer.lines(), sep="\n")
    print(answers.summary(), file=sys.stderr if args.json else sys.stdout)
    return FAILED if answers.failed else OK


def _print_segments(rec, args: argparse.Namespace) -> int:
    """``recognize --segments``: each recording's segments as they close (fplib.segments)."""
    from fplib import audio, segments, streams

    found = unknown = failed = 0
    for q in args.queries:
        try:
            for seg in segments.segment_file(rec, q, progress=not args.no_progress):
                found += seg.song is not None
                unknown += seg.song is None
                if args.json:
                    print(json.dumps({"file": q, **seg.to_json()}, ensure_ascii=False), flush=True)
                else:
                    print(f"{q}  {seg}", flush=True)
        except (audio.AudioError, streams.ListenError, OSError) as e:
            failed += 1
            if args.json:
                print(json.dumps({"file": q, "error": str(e)}, ensure_ascii=False))
            _err(e if str(e).startswith(q) else f"{q}: {e}")
    summary = (
        f"{len(args.queries)} recording(s): {found} song segment(s), {unknown} unknown stretch(es), {failed} failed"
    )
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return FAILED if failed else OK


def recognize_main(argv: list[str] | None = None) -> int:
    """Identify recordings: song, offset and score, or 'not in the database'."""
    return _run(_recognize_parser(), argv, _recognize)


def _listen_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="listen",
        description="Live recognition: name each song as soon as it is recognised (song, where it is "
        "now, seconds of audio needed, confidence), from a microphone or from audio on standard input.",
        epilog="examples: listen --model M --catalogue C --index I.index   (microphone); "
        "ffmpeg -i x.mp3 -f wav - | listen - ...;  arecord -f S16_LE -r 16000 -c 1 -t raw | listen - "
        "--format s16le --rate 16000 ...",
    )
    ap.add_argument(
        "source",
        nargs="?",
        default="mic",
        help="mic (default: the input device), - (standard "
        "input: wav, flac, ogg, mp3 ... as FFmpeg decodes them, or raw PCM with --format), or a file",
    )
    ap.add_argument("--model", default=None, help=f"checkpoint that made the catalogue (default: {SHIPPED})")
    ap.add_argument("--catalogue", required=True, help="catalogue folder")
    ap.add_argument("--index", required=True, help="NAME.index (its NAME.threshold.json is used if present)")
    ap.add_argument(
        "--format",
        default=None,
        choices=["s16le", "f32le"],
        help="the input is raw interleaved PCM of this sample format (needs --rate)",
    )
    ap.add_argument("--rate", type=int, default=None, help="raw PCM: sample rate in Hz")
    ap.add_argument("--channels", type=int, default=1, help="raw PCM: channels, averaged to mono (default: 1)")
    ap.add_argument(
        "--input-device",
        default=None,
        help="microphone: sounddevice input device (number or name; list them with python -m sounddevice)",
    )
    ap.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="standard input or a "
        "file: process no faster than real time, as if live (default); --no-realtime: as fast as possible",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object a line per event")
    ap.add_argument(
        "--segments",
        action="store_true",
        help="print segments as they close instead of events: song, start and end in the stream, offset in the "
        "song, confidence, and the unknown stretches between (recognize --segments's segmenter; --window, "
        "--change, --confirm, --jump and --forget are the events' settings)",
    )
    ap.add_argument("--window", type=float, default=10.0, help="rolling buffer, s (default: 10)")
    ap.add_argument(
        "--change",
        type=float,
        default=3.0,
        help="the last seconds also decided on every hop, to catch a change of song (default: 3; 0: off)",
    )
    ap.add_argument(
        "--confirm",
        type=int,
        default=4,
        help="consecutive accepting hops (0.5 s) before an answer; "
        "fewer answer sooner and falsely more often (default: 4)",
    )
    ap.add_argument(
        "--jump",
        type=float,
        default=1.5,
        help="an offset this far (s) from the expected one is a new answer (default: 1.5)",
    )
    ap.add_argument(
        "--forget", type=float, default=4.0, help="report the song lost after this many seconds without it (default: 4)"
    )
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per search (default: as built)")
    ap.add_argument(
        "--phases",
        type=int,
        default=None,
        help="query phases per 0.5-s hop (default: those the threshold was calibrated with, else 1)",
    )
    ap.add_argument(
        "--decision",
        default=None,
        choices=["score", "margin"],
        help="what the threshold is compared with (default: what it was calibrated with, else score)",
    )
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return ap


def _listen(args: argparse.Namespace) -> int | None:
    from fplib import listen, streams

    try:
        source = streams.Source(args.source, args.format, args.rate, args.channels, args.input_device, args.realtime)
        listener = listen.open_listener(
            args.model,
            args.catalogue,
            args.index,
            device=args.device,
            nprobe=args.nprobe,
            phases=args.phases,
            decision=args.decision,
            window_s=args.window,
            change_s=args.change or None,
            confirm=args.confirm,
            jump_s=args.jump,
            forget_s=args.forget,
        )
        rec = listener.rec
        print(f"threshold: {rec.threshold_source}; decision {rec.decision}, {rec.phases} phase(s)", file=sys.stderr)
        with source.open(rec.fe.sr, rec) as chunks:  # raw PCM is checked for a misreading as it is read
            if args.segments:
                from fplib.segments import Segmenter

                for seg in Segmenter(rec, block_s=0).segments(chunks):  # decided as each hop arrives
                    print(json.dumps(seg.to_json(), ensure_ascii=False) if args.json else str(seg), flush=True)
            else:
                listen.run(listener, chunks, as_json=args.json)
    except KeyboardInterrupt:  # how a live stream is stopped: not an error to report
        return INTERRUPTED
    return None


def listen_main(argv: list[str] | None = None) -> int:
    """Live recognition from a microphone or standard input: each song named as soon as it is recognised."""
    return _run(_listen_parser(), argv, _listen)


def _notebooks_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="fplib notebooks",
        description="Run the numbered notebooks headless with papermill (make demo runs --profile demo), with the "
        "parameters of params/PROFILE/; executed copies land in outputs/RUN_NAME/notebooks/.",
        epilog="exit status: 0 done, 1 a notebook failed (the executed copy with the error is named), 2 usage or "
        "parameter error, 130 interrupted",
    )
    ap.add_argument("--profile", default="demo", help="parameter profile: a folder under params/ (default: demo)")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (prefixes such as 01 02)")
    ap.add_argument("--run_name", help="override every notebook's run_name")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter in every notebook that has it (VALUE is YAML: 3, 0.5, true, [0, 10])",
    )
    ap.add_argument("--quiet", action="store_true", help="do not echo the notebooks' output")
    ap.add_argument(
        "--cell_timeout",
        type=int,
        default=None,
        metavar="SECONDS",
        help="fail a cell that runs longer than this (default: fplib.notebooks.CELL_TIMEOUT_S, 1800)",
    )
    return ap


def _notebooks(args: argparse.Namespace) -> None:
    from fplib import notebooks

    t0 = time.time()
    extra = notebooks.parse_settings(args.set)
    executed = notebooks.run(
        args.profile,
        args.only,
        args.run_name,
        extra=extra,
        log_output=not args.quiet,
        cell_timeout=args.cell_timeout or notebooks.CELL_TIMEOUT_S,
    )
    print(f"== {len(executed)} notebook(s), profile {args.profile}, done in {time.time() - t0:.0f} s", flush=True)
    summary = notebooks.results_summary(executed)
    if summary:
        print(summary)


def notebooks_main(argv: list[str] | None = None) -> int:
    """Run the numbered notebooks headless (make demo): one profile of parameters, end to end."""
    return _run(_notebooks_parser(), argv, _notebooks, again="run the same command again")


COMMANDS = {
    "generate_training_dataset": generate_training_dataset_main,
    "trainer": trainer_main,
    "create_faiss_indexes": create_faiss_indexes_main,
    "recognize": recognize_main,
    "generate_fingerprints": generate_fingerprints_main,
    "calibrate_threshold": calibrate_threshold_main,
    "db": db_main,
    "listen": listen_main,
    "build_corpus": build_corpus_main,
    "notebooks": notebooks_main,
}


def _describe(name: str) -> str:
    doc = (COMMANDS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def main(argv: list[str] | None = None) -> int:
    """``fplib COMMAND [options]``: dispatch to a command (``fplib --help`` lists them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    width = max(len(n) for n in COMMANDS)
    listing = "\n".join(f"  {n:<{width}}  {_describe(n)}" for n in COMMANDS)
    usage = (
        "usage: fplib COMMAND [options]   (fplib COMMAND --help explains every option)\n\n"
        f"Neural audio fingerprinting.\n\ncommands:\n{listing}\n\n"
        "Identify your own music: generate_fingerprints, create_faiss_indexes, calibrate_threshold, recognize.\n"
        "Exit status: 0 done, 1 some inputs failed, 2 usage or input error."
    )
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
