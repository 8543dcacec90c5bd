"""Turn a training run on the real corpus into a shipped model: slim file, card, default threshold.

    python benchmarks/ship_model.py CHECKPOINT NAME [--corpus outputs/corpus] [--fpr 0.02] [--out fplib/pretrained]

1. ``fplib.pretrained.export``: ``OUT/NAME.pt`` (float16 weights) and its card ``OUT/NAME.json``;
2. the default "not in the database" threshold (fitted for half the promised false-positive rate, see
   ``--fit-fpr``), calibrated as ``calibrate_threshold`` does on real music
   that no catalogue holds: a catalogue of the corpus's training songs (what the model heard; the
   threshold is not tied to a database) is indexed, and queries cut from the corpus's held-out songs,
   reverberated with its held-out rooms and mixed with its held-out noises, are split in two halves by
   song: a threshold fitted on either half is measured on the other, and the threshold shipped is fitted
   on both (``fplib.evaluate.calibrate_on_corpus``, cross-fitted). If
   the measured rate misses the target by more than two standard errors, nothing is shipped and the
   script exits 1 (the files are made in a staging folder and moved into OUT only at the end);
3. ``OUT/NAME.training.json``: every song of the corpus (package, version, file, licence, split and the
   SHA-256 of its decoded audio, no audio), so that the evaluation refuses to query the model's training
   songs on any machine (``fplib.evaluate.model_corpora``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fplib import audio, corpus, evaluate, index, pretrained, search, storage  # noqa: E402
from fplib.catalogue import Catalogue, extract, model_description  # noqa: E402
from fplib.checkpoints import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("name", help="the shipped model's name, e.g. fplib-small-v2")
    ap.add_argument("--corpus", default=str(corpus.default_root()))
    ap.add_argument("--fpr", type=float, default=evaluate.SHIPPED_FPR, help="the false-positive rate the card "
                    "promises: the held-back measurement must stay within it (two standard errors)")
    ap.add_argument("--fit-fpr", type=float, default=evaluate.SHIPPED_FPR / 2, help="the rate the threshold is "
                    "fitted for (default: half the promise: the negatives are a few dozen songs, "
                    "and a threshold fitted on some songs for exactly the promised rate lands above it on others)")
    ap.add_argument("--phases", type=int, default=4)
    ap.add_argument("--per-cell", type=int, default=100, help="queries per length and SNR per half (default: 100; "
                    "the tail of a few dozen songs' scores sets the threshold, more queries steady it)")
    ap.add_argument("--out", default=str(pretrained.directory()))
    ap.add_argument("--card", default="{}", help="JSON fields added to the card (training_command, licence, ...)")
    args = ap.parse_args()
    import json

    out = Path(args.out)
    root = Path(args.corpus)
    staging = Path(tempfile.mkdtemp(dir=storage.outputs_root(), prefix="ship-"))  # moved into --out on success
    model_path = staging / f"{args.name}.pt"
    card = pretrained.export(args.checkpoint, model_path, json.loads(args.card))
    print(f"exported {model_path.name} ({card['bytes']:,} bytes, SHA-256 {card['sha256'][:12]}...)")
    model, fe = load_model(model_path)
    with tempfile.TemporaryDirectory(dir=storage.outputs_root()) as tmp:
        cat = Catalogue(Path(tmp) / "catalogue", fe, model_description(model_path))
        songs = audio.list_audio(corpus.training_folders(root)["train_set"])
        extract(songs, cat, model, progress=False)
        idx = index.build(cat, "train", tmp)
        rec = search.Recognizer(model, cat, idx, phases=args.phases, decision="margin")
        cal = evaluate.calibrate_on_corpus(rec, root, args.fit_fpr, progress=False, per_cell=args.per_cell)
        cat.close()
    promised = replace(cal, target_fpr=args.fpr)  # the held-back check is against the promise
    for r in cal.per_length:
        fpr = "n/a" if r["fpr"] is None else f"{r['fpr']:.1%}"
        print(f"  {r['length_s']:>4g} s: threshold {r['threshold']:.3f}, false positives held back "
              f"{fpr} of {r['n_test']}" + ("  <- misses the promise" if r in promised.missed else ""))
    if promised.missed:
        shutil.rmtree(staging)
        sys.exit(f"the held-back false-positive rate misses {args.fpr:.0%}; nothing shipped")
    threshold = {**cal.to_json(), "promised_fpr": args.fpr, "calibrated_on": (
        f"real out-of-database music: {len(cal.negatives['calibration'])} + {len(cal.negatives['test'])} held-out "
        f"songs of the training corpus (build_corpus), with its held-out rooms and noises, against a catalogue "
        f"of its {len(songs)} training songs; {args.per_cell} queries per length and "
        f"SNR per half; fitted for {args.fit_fpr:.0%} on each half and {cal.measured_fpr:.1%} measured on the other, "
        f"the threshold shipped fitted on both")}
    threshold.pop("negatives", None)
    storage.write_json(model_path.with_suffix(".json"), {**card, "threshold": threshold})
    storage.write_json(model_path.with_suffix(".training.json"), corpus.training_list(root / corpus.MANIFEST))
    out.mkdir(parents=True, exist_ok=True)
    for suffix in (".pt", ".training.json", ".json"):  # the card last: it names the model's checksum
        os.replace(model_path.with_suffix(suffix), out / f"{args.name}{suffix}")
    shutil.rmtree(staging)
    print(f"{out / args.name}.pt, .json (threshold for {args.fpr:.0%}, measured {cal.measured_fpr:.1%} held back, "
          f"cross-fitted) and .training.json (the corpus's songs)")


if __name__ == "__main__":
    main()
