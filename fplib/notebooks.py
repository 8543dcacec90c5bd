"""Run the numbered notebooks headless with papermill: ``python -m fplib.notebooks --profile demo``.

Parameters for a profile come from ``params/<profile>/<notebook>.yaml`` (overrides only; a missing
file means the notebook's own defaults). They are checked against the notebook's ``parameters`` cell
before anything runs: an unknown name or a value of the wrong type is an error. Executed notebooks
are written to ``outputs/<run_name>/notebooks/``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import yaml

from fplib import storage
from fplib.config import ParameterError, check_type

# A cell running longer than this fails the run instead of hanging it (the demo's longest takes ~1 min).
CELL_TIMEOUT_S = 1800
TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict, "tuple": tuple}


class NotebookFailed(RuntimeError):
    pass


def notebooks_dir() -> Path:
    return storage.project_root() / "notebooks"


def list_notebooks() -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order."""
    return sorted(p for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def parameters_cell(nb_path: Path) -> dict[str, tuple[Any, Any]]:
    """``{name: (annotation, default)}`` from the notebook's single ``parameters`` cell."""
    nb = nbformat.read(nb_path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{nb_path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    out = {}
    for node in ast.parse(cells[0].source).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name) or node.value is None:
            raise ParameterError(f"{nb_path.name}: the parameters cell may only hold annotated literals "
                                 f"(`name: type = value  # comment`), found: {ast.unparse(node)}")
        ann = eval(ast.unparse(node.annotation), {"__builtins__": {}}, {**TYPES, "None": None})  # noqa: S307
        out[node.target.id] = (ann, ast.literal_eval(node.value))
    return out


def load_params(profile: str, nb_path: Path) -> dict[str, Any]:
    """The profile's overrides for a notebook, checked against its parameters cell."""
    path = storage.project_root() / "params" / profile / f"{nb_path.stem}.yaml"
    if not (storage.project_root() / "params" / profile).is_dir():
        raise FileNotFoundError(f"no parameter profile {profile!r} (expected a folder params/{profile}/)")
    overrides = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    if not isinstance(overrides, dict):
        raise ParameterError(f"{path}: must be a mapping of parameter names to values")
    return check_params(nb_path, overrides, source=str(path))


def check_params(nb_path: Path, overrides: dict[str, Any], source: str = "parameters") -> dict[str, Any]:
    schema = parameters_cell(nb_path)
    unknown = sorted(set(overrides) - set(schema))
    if unknown:
        raise ParameterError(f"{source}: unknown parameter(s) {unknown} for {nb_path.name}; "
                             f"known: {sorted(schema)}")
    return {k: check_type(k, v, schema[k][0]) for k, v in overrides.items()}


def run(profile: str = "demo", only: list[str] | None = None, run_name: str | None = None,
        extra: dict[str, Any] | None = None, log_output: bool = True) -> list[Path]:
    """Execute the notebooks in order; returns the executed notebooks' paths. Stops at the first failure."""
    import papermill as pm

    notebooks = list_notebooks()
    if only:
        notebooks = [p for p in notebooks if any(p.stem.startswith(o) or p.stem == o for o in only)]
        if not notebooks:
            raise ValueError(f"no notebook matches {only}; have {[p.stem for p in list_notebooks()]}")
    plans = []
    for nb in notebooks:  # check every notebook's parameters before running any
        params = load_params(profile, nb)
        params.update(check_params(nb, {k: v for k, v in (extra or {}).items() if k in parameters_cell(nb)}))
        if run_name is not None:
            params["run_name"] = run_name
        plans.append((nb, params))
    executed = []
    for nb, params in plans:
        name = params.get("run_name", parameters_cell(nb).get("run_name", (None, "demo"))[1])
        out = storage.run_dir(name) / "notebooks" / nb.name
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"== {nb.stem} -> {out}", flush=True)
        t0 = time.time()
        failed = out.with_suffix(".failed.ipynb")
        failed.unlink(missing_ok=True)
        try:
            with storage.atomic_path(out) as tmp:
                try:
                    pm.execute_notebook(str(nb), str(tmp), parameters=params, cwd=str(nb.parent),
                                        log_output=log_output, progress_bar=False, kernel_name="python3",
                                        execution_timeout=CELL_TIMEOUT_S)
                except Exception:
                    if tmp.exists():
                        tmp.replace(failed)  # keep the executed notebook, error and all, for inspection
                    raise
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(f"{nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                                 f"executed notebook with the error: {failed}") from None
        except Exception as e:  # a cell timeout, a dead kernel
            raise NotebookFailed(f"{nb.name} did not finish: {type(e).__name__}: {e}") from None
        print(f"   done in {time.time() - t0:.1f} s", flush=True)
        executed.append(out)
    return executed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fplib.notebooks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo", help="parameter profile: a folder under params/ (default: demo)")
    ap.add_argument("--only", nargs="*", help="run only these notebooks (prefixes such as 01 02)")
    ap.add_argument("--run-name", help="override every notebook's run_name")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="override a parameter in every notebook that has it (VALUE is YAML: 3, 0.5, true, [0, 10])")
    ap.add_argument("--quiet", action="store_true", help="do not echo the notebooks' output")
    args = ap.parse_args(argv)
    try:
        extra = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise ParameterError(f"--set expects NAME=VALUE, got {item!r}")
            extra[name] = yaml.safe_load(value)
        known = set().union(*(parameters_cell(nb) for nb in list_notebooks()))
        if set(extra) - known:
            raise ParameterError(f"--set: unknown parameter(s) {sorted(set(extra) - known)}")
        executed = run(args.profile, args.only, args.run_name, extra=extra, log_output=not args.quiet)
        results = executed[-1].parent.parent / "05_build_index_and_evaluate" / "metrics.json" if executed else None
        if results is not None and results.exists() and executed[-1].stem.startswith("05"):
            from fplib.viz import format_table

            metrics = storage.read_json(results)
            print(f"\n== results ({results})\n{format_table(metrics['table'])}")
            for key in ("top1", "fp_rate"):
                print(f"{key} by query length: " + "; ".join(
                    f"{system} " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in by_len.items())
                    for system, by_len in metrics["summary"][key].items()))
    except (ParameterError, FileNotFoundError, ValueError, NotebookFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
