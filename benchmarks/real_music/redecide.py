"""Re-decide a saved run of ``run.py`` with another threshold, without searching again.

    python benchmarks/real_music/redecide.py RESULTS_DIR SYSTEM CARD.json
    python benchmarks/real_music/redecide.py --quick    # results/quick (run.py --quick, run first if missing)

Every row of ``RESULTS_DIR/rows.json`` keeps the confidence the decision compared with the threshold,
so a system's table under another threshold (a model card's, ``NAME.json``, or a ``NAME.threshold.json``)
is exact: the rows of ``SYSTEM`` are accepted when their confidence reaches the threshold for their
query's length, and scored as ``run.py`` scores them (``fplib.evaluate.score``). The threshold must have
been calibrated with the run's phases and decision (checked). Each row of the table is printed beside
the run's own decision (as run).

``--quick`` re-decides ``run.py --quick``'s run (``results/quick``, made first if missing: under a minute)
with the shipped model's card; its figures are not comparable with a full run's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from fplib import evaluate, search, storage  # noqa: E402
from fplib import queries as fpqueries  # noqa: E402
from fplib.features import FrontEnd, n_windows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?")
    ap.add_argument("system", nargs="?")
    ap.add_argument("threshold", nargs="?", help="a model card (NAME.json) or a NAME.threshold.json")
    ap.add_argument("--quick", action="store_true", help="re-decide run.py --quick's run with the shipped card")
    args = ap.parse_args()
    if args.quick:
        from fplib import pretrained

        print(
            "redecide QUICK MODE: run.py --quick's run on the stand-in data, re-decided with the shipped model's "
            "card; the figures are not comparable with a full run's",
            flush=True,
        )
        args.results, args.system = str(HERE / "results" / "quick"), "neural"
        args.threshold = str(pretrained.default_model().with_suffix(".json"))
        if not (Path(args.results) / "rows.json").exists():
            print("(no results/quick yet: running run.py --quick first)", flush=True)
            subprocess.run([sys.executable, str(HERE / "run.py"), "--quick"], check=True)
    elif args.threshold is None:
        ap.error("RESULTS_DIR, SYSTEM and THRESHOLD are required (or --quick)")
    res = Path(args.results)
    doc = storage.read_json(args.threshold)
    saved = search.check_threshold(doc.get("threshold") if "sha256" in doc else doc, args.threshold)  # card or file
    metrics = storage.read_json(res / "metrics.json")
    protocol = metrics.get("protocol", {})
    run_args = metrics.get("args", {})
    for key in ("phases", "decision"):
        if key in saved and key in run_args and saved[key] != run_args[key]:
            sys.exit(f"{args.threshold}: calibrated with {key} {saved[key]}, the run used {run_args[key]}")
    t = saved["threshold"]
    threshold = search.Threshold(tuple(t["windows"]), tuple(t["values"])) if isinstance(t, dict) else float(t)
    fe = FrontEnd()
    queries = fpqueries.load_queries(res / "queries.json")
    by_id = {q.id: q for q in queries}
    rows, as_run = [], storage.read_json(res / "rows.json")
    for r in as_run:
        if r["system"] == args.system:
            w = n_windows(int(round(by_id[r["query"]].length_s * fe.sr)), fe)
            limit = threshold(w) if callable(threshold) else threshold
            r = {**r, "accepted": r["confidence"] is not None and r["confidence"] >= limit}
        rows.append(r)
    if not any(r["system"] == args.system for r in rows):
        sys.exit(f"{res}: no rows of system {args.system!r}")
    tables = {
        how: evaluate.score(queries, r, tolerance_s=protocol.get("tolerance_s", 0.5))
        for how, r in (("re-decided", rows), ("as run", as_run))
    }
    figures = {how: [evaluate.summary(t, k) for k in ("top1", "ranked1", "fp_rate")] for how, t in tables.items()}
    print(
        f"{args.system} re-decided with {args.threshold}: top-1 / ranked first per length, false positives "
        f"(each row as run below it)"
    )
    names = sorted(k for k in figures["re-decided"][0] if k == args.system or k.startswith(args.system + " @"))
    for name in names:
        for how, (top, ranked, fp) in figures.items():
            cells = "  ".join(f"{100 * top[name][L]:5.1f} / {100 * ranked[name][L]:5.1f}" for L in top[name])
            rates = fp[name]
            label = name if how == "re-decided" else "  as run"
            print(
                f"  {label:18s} {cells}   FP "
                + " / ".join(f"{100 * v:.1f}" for v in rates.values())
                + f" % ({100 * sum(rates.values()) / len(rates):.1f} %)"
            )


if __name__ == "__main__":
    main()
