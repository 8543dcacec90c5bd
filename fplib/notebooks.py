"""Run the numbered notebooks headless with papermill: ``fplib notebooks --profile demo`` (also
``python -m fplib.notebooks --profile demo``; the command is in :mod:`fplib.cli`).

Parameters for a profile come from ``params/<profile>/<notebook>.yaml`` (overrides only; a missing
file means the notebook's own defaults). They are checked against the notebook's ``parameters`` cell
before anything runs: an unknown name or a value of the wrong type is an error. Executed notebooks
are written to ``outputs/<run_name>/notebooks/`` and signed as trusted (:func:`sign`).

While it runs it prints one line per notebook (name, profile, where the executed copy goes), one line
per code cell (its position and the heading of the section it belongs to), the notebooks' own printed
output indented under it (``--quiet`` leaves that out), and the time each notebook took.
"""

from __future__ import annotations

import ast
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import nbformat
import yaml

from fplib import runs, storage
from fplib.config import ParameterError, check_type

# A cell running longer than this fails the run instead of hanging it (the demo's longest takes ~1 min);
# run(cell_timeout=...) and --cell_timeout override it.
CELL_TIMEOUT_S = 1800
# The kernel manager provisions CurveZMQ keys for the kernel (its kernelspec declares support), so the
# local kernel's sockets are encrypted and the kernel does not warn that they are plain-text TCP.
KERNEL_CONFIG = {"KernelManager": {"transport_encryption": "auto"}}
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
            raise ParameterError(
                f"{nb_path.name}: the parameters cell may only hold annotated literals "
                f"(`name: type = value  # comment`), found: {ast.unparse(node)}"
            )
        ann = eval(ast.unparse(node.annotation), {"__builtins__": {}}, {**TYPES, "None": None})  # noqa: S307
        out[node.target.id] = (ann, ast.literal_eval(node.value))
    return out


def load_params(profile: str, nb_path: Path) -> dict[str, Any]:
    """The profile's overrides for a notebook, checked against its parameters cell."""
    if not profile or Path(profile).name != profile or profile in (".", ".."):
        raise ValueError(f"profile {profile!r}: a profile is the plain name of a folder under params/, not a path")
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
        raise ParameterError(f"{source}: unknown parameter(s) {unknown} for {nb_path.name}; known: {sorted(schema)}")
    return {k: check_type(k, v, schema[k][0]) for k, v in overrides.items()}


class _Indented:
    """A text stream that writes to ``out`` with ``prefix`` at the start of every line."""

    def __init__(self, out: TextIO, prefix: str):
        self.out, self.prefix, self.at_line_start = out, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                self.out.write(self.prefix)
            self.out.write(piece)
            self.at_line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _heading(markdown: str) -> str | None:
    """The text of the first Markdown heading in a cell, if any."""
    m = re.search(r"^#+\s+(.+?)\s*$", markdown, re.M)
    return m.group(1) if m else None


class _Progress:
    """nbclient hooks printing one line per code cell: its number, the total and its section heading."""

    def __init__(self, out: TextIO, echo: _Indented | None):
        self.out, self.echo = out, echo
        self.total, self.done, self.section, self.t0 = 0, 0, "", time.time()
        self.times: list[tuple[float, str]] = []

    def on_notebook_start(self, notebook: Any, **_: Any) -> None:
        self.total = sum(1 for c in notebook.cells if c.cell_type == "code" and c.source.strip())

    def on_cell_start(self, cell: Any, **_: Any) -> None:
        if cell.cell_type == "markdown":
            self.section = _heading(cell.source) or self.section
            return
        if cell.cell_type != "code" or not cell.source.strip():
            return
        self.done += 1
        tags = set(cell.get("metadata", {}).get("tags", []))
        code = cell.source.lstrip()
        if "injected-parameters" in tags:
            what = "parameters (injected)"
        elif "parameters" in tags:
            what = "parameters (defaults)"
        elif "config.notebook_params(" in code:
            what = "checking the parameters"
        elif code.startswith(("import ", "from ")) and self.done == 1:
            what = "imports"
        else:
            what = self.section
        if self.echo is not None and not self.echo.at_line_start:
            self.out.write("\n")
            self.echo.at_line_start = True
        self.out.write(f"   [{self.done:2d}/{self.total}] {what}\n")
        self.out.flush()
        self.t0 = time.time()

    def on_cell_executed(self, cell: Any, **_: Any) -> None:
        self.times.append((time.time() - self.t0, self.section))


def sign(path: Path) -> None:
    """Mark an executed notebook as trusted, with the notebook format's own mechanism (``jupyter trust``:
    a signature of its content in this user's Jupyter data folder), so that JupyterLab opens it with its
    audio players, widgets and progress bars working instead of as untrusted text."""
    from nbformat.sign import NotebookNotary

    NotebookNotary().sign(nbformat.read(path, as_version=4))


# What JupyterLab adds to a notebook's metadata when it saves, beyond nbstripout's defaults (the Makefile's
# git filter strips the same keys)
LAB_METADATA = tuple(
    f"metadata.language_info.{k}"
    for k in ("codemirror_mode", "file_extension", "mimetype", "nbconvert_exporter", "pygments_lexer", "version")
)
# nbstripout's own defaults (its command line adds them; its strip_output does not)
NBSTRIPOUT_DEFAULT_KEYS = (
    "metadata.signature",
    "metadata.widgets",
    "cell.metadata.collapsed",
    "cell.metadata.ExecuteTime",
    "cell.metadata.execution",
    "cell.metadata.heading_collapsed",
    "cell.metadata.hidden",
    "cell.metadata.scrolled",
)


def strip_on_save(model: dict, path: str, contents_manager: Any = None, **_: Any) -> None:
    """A Jupyter server ``pre_save_hook`` (``make lab`` installs it): a numbered notebook of ``notebooks/``
    is saved as nbstripout strips it (no outputs or execution counts, cell ids kept), so running it in
    JupyterLab leaves the tracked file, and ``git status``, as they were; the open tab keeps its outputs.
    Executed copies elsewhere (``outputs/``) are saved whole."""
    from nbstripout import strip_output

    if (
        model.get("type") != "notebook"
        or Path(path).parent.name != "notebooks"
        or not re.match(r"\d\d_.*\.ipynb$", Path(path).name)
    ):
        return
    nb = nbformat.from_dict(model["content"])
    model["content"] = strip_output(
        nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=[*NBSTRIPOUT_DEFAULT_KEYS, *LAB_METADATA]
    )


def run(
    profile: str = "demo",
    only: list[str] | None = None,
    run_name: str | None = None,
    extra: dict[str, Any] | None = None,
    log_output: bool = True,
    cell_timeout: int | None = None,
    out: TextIO | None = None,
) -> list[Path]:
    """Execute the notebooks in order; returns the executed notebooks' paths. Stops at the first failure.

    Progress goes to ``out`` (default: standard output), with the notebooks' own output indented under
    each cell when ``log_output``. A cell running longer than ``cell_timeout`` seconds (default
    ``CELL_TIMEOUT_S``) fails the run.
    """
    import papermill as pm
    from traitlets.config import Config

    out = out if out is not None else sys.stdout
    timeout = int(cell_timeout if cell_timeout is not None else CELL_TIMEOUT_S)
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
        dest = runs.Run.named(name).executed_notebook(nb.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"== {nb.stem} (profile {profile}) -> {dest}", file=out, flush=True)
        t0 = time.time()
        failed = dest.with_suffix(".failed.ipynb")
        failed.unlink(missing_ok=True)
        echo = _Indented(out, "         | ") if log_output else None
        progress = _Progress(out, echo)
        try:
            with storage.atomic_path(dest) as tmp:
                try:
                    pm.execute_notebook(
                        str(nb),
                        str(tmp),
                        parameters=params,
                        cwd=str(nb.parent),
                        progress_bar=False,
                        kernel_name="python3",
                        execution_timeout=timeout,
                        stdout_file=echo,
                        stderr_file=echo,
                        config=Config(KERNEL_CONFIG),
                        on_notebook_start=progress.on_notebook_start,
                        on_cell_start=progress.on_cell_start,
                        on_cell_executed=progress.on_cell_executed,
                    )
                except Exception:
                    if tmp.exists():
                        tmp.replace(failed)  # keep the executed notebook, error and all, for inspection
                    raise
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(
                f"{nb.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                f"executed notebook with the error: {failed}"
            ) from None
        except Exception as e:  # a cell timeout, a dead kernel
            raise NotebookFailed(f"{nb.name} did not finish: {type(e).__name__}: {e}") from None
        finally:
            if echo is not None and not echo.at_line_start:
                out.write("\n")
        sign(dest)
        slowest = max(progress.times, default=(0.0, ""))
        print(
            f"   {nb.stem} done in {time.time() - t0:.1f} s"
            + (f" (slowest cell: {slowest[1]}, {slowest[0]:.1f} s)" if slowest[0] >= 1 else ""),
            file=out,
            flush=True,
        )
        executed.append(dest)
    return executed


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` overrides (VALUE is YAML: ``3``, ``0.5``, ``true``, ``[0, 10]``) -> ``{name: value}``;
    :class:`ParameterError` for a malformed item or a name no notebook's parameters cell declares."""
    extra = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ParameterError(f"--set expects NAME=VALUE, got {item!r}")
        extra[name] = yaml.safe_load(value)
    known = set().union(*(parameters_cell(nb) for nb in list_notebooks()))
    if set(extra) - known:
        raise ParameterError(f"--set: unknown parameter(s) {sorted(set(extra) - known)}")
    return extra


def results_summary(executed: list[Path]) -> str | None:
    """The headline table of a run that ended with notebook 05 (its ``results.json``), else None."""
    results = runs.Run(executed[-1].parent.parent).results if executed else None
    if results is None or not results.exists() or not executed[-1].stem.startswith("05"):
        return None
    from fplib.viz import headline_markdown  # matplotlib: only when there is a table to show

    metrics = storage.read_json(results)
    return (
        f"\n== results: {results} (per SNR too; the executed notebook 05 explains every column)\n"
        f"{headline_markdown(metrics['headline'])}\n"
        "top-1: right song and offset, accepted as in the database; ranked first: the right answer ranked "
        "first, before the threshold;\nFP: out-of-database queries accepted; ms per query: front end, "
        "model, search and decision; DB bytes/s: index size per second of audio."
    )


if __name__ == "__main__":  # `python -m fplib.notebooks ...` is the command `fplib notebooks ...`
    from fplib.cli import notebooks_main

    sys.exit(notebooks_main())
