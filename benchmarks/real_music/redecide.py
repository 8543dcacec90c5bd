"""Re-decide a saved run of ``run.py`` with another threshold, without searching again.

    python benchmarks/real_music/redecide.py RESULTS_DIR SYSTEM CARD.json

Every row of ``RESULTS_DIR/rows.json`` keeps the confidence the decision compared with the threshold,
so a system's table under another threshold (a model card's, ``NAME.json``, or a ``NAME.threshold.json``)
is exact: the rows of ``SYSTEM`` are accepted when their confidence reaches the threshold for their
query's length, and scored as ``run.py`` scores them (``fplib.evaluate.score``). The threshold must have
been calibrated with the run's phases and decision (checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from fplib import evaluate, search, storage  # noqa: E402
from fplib.features import FrontEnd, n_windows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("system")
    ap.add_argument("threshold", help="a model card (NAME.json) or a NAME.threshold.json")
    args = ap.parse_args()
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
    queries = evaluate.load_queries(res / "queries.json")
    by_id = {q.id: q for q in queries}
    rows = []
    for r in storage.read_json(res / "rows.json"):
        if r["system"] == args.system:
            w = n_windows(int(round(by_id[r["query"]].length_s * fe.sr)), fe)
            limit = threshold(w) if callable(threshold) else threshold
            r = {**r, "accepted": r["confidence"] is not None and r["confidence"] >= limit}
        rows.append(r)
    if not any(r["system"] == args.system for r in rows):
        sys.exit(f"{res}: no rows of system {args.system!r}")
    table = evaluate.score(queries, rows, tolerance_s=protocol.get("tolerance_s", 0.5))
    top, ranked, fp = (evaluate.summary(table, k) for k in ("top1", "ranked1", "fp_rate"))
    print(f"{args.system} re-decided with {args.threshold}: top-1 / ranked first per length, false positives")
    for name in sorted(k for k in top if k == args.system or k.startswith(args.system + " @")):
        cells = "  ".join(f"{100 * top[name][L]:5.1f} / {100 * ranked[name][L]:5.1f}" for L in top[name])
        rates = fp[name]
        print(f"  {name:18s} {cells}   FP " + " / ".join(f"{100 * v:.1f}" for v in rates.values())
              + f" % ({100 * sum(rates.values()) / len(rates):.1f} %)")


if __name__ == "__main__":
    main()
