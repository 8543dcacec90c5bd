"""Repository hygiene: notebooks stripped and thin, parameters declared properly, profiles valid,
environment.yml in step with pyproject.toml, imports flowing one way, lint clean."""

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

from fplib import notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks.list_notebooks()
# imports flow one way: a module may import only modules listed before it
LAYERS = ["storage", "config", "audio", "features", "augment", "data", "synth", "generate", "models", "losses", "optim",
          "train", "pretrained", "catalogue", "index", "search", "listen", "landmark", "evaluate", "viz", "notebooks",
          "cli"]


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS][:1] == ["01_generate_dataset"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs (nbstripout)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = notebooks.parameters_cell(path)  # annotated literals only
    assert "run_name" in params
    for line in nb.cells[tagged[0]].source.splitlines():
        if line.strip():
            assert re.match(r"^\w+: [\w\[\], |]+ = .+  # \S", line), (
                f"{path.name}: needs `name: type = value  # why`: {line}")
    for name, (ann, default) in params.items():
        from fplib.config import check_type

        check_type(name, default, ann)  # defaults fit their own annotations
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    validate = nb.cells[tagged[0] + 1].source
    assert "config.notebook_params(globals())" in validate, "the cell after the parameters validates them"
    assert first_code.source.lstrip().startswith(("import", "from")), "imports come first"


FORBIDDEN = [r"sys\.path", r"os\.chdir", r"^\s*[!%]pip", r"['\"]/(home|tmp|work|root|Users)/", r"[A-Z]:\\\\",
             r"^\s*(class|def) "]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_code_is_thin_and_portable(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for pattern in FORBIDDEN:
            assert not re.search(pattern, cell.source, re.M), f"{path.name}: forbidden {pattern!r} in:\n{cell.source}"
        assert len(cell.source.splitlines()) <= 25, f"{path.name}: a long cell belongs in fplib:\n{cell.source}"


PROFILE_FILES = sorted((ROOT / "params").glob("*/*.yaml"))


@pytest.mark.parametrize("profile_file", PROFILE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_parameter_profiles_are_valid(profile_file):
    nb = ROOT / "notebooks" / f"{profile_file.stem}.ipynb"
    assert nb.exists(), f"{profile_file}: no notebook {nb.name}"
    notebooks.check_params(nb, yaml.safe_load(profile_file.read_text()) or {}, source=str(profile_file))


def test_every_notebook_has_demo_cpu_and_full_profiles():
    for nb in NOTEBOOKS:
        for profile in ("demo", "cpu", "full"):
            assert (ROOT / "params" / profile / f"{nb.stem}.yaml").exists(), f"params/{profile}/{nb.stem}.yaml"


def _names(reqs):
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "bench"):
        wanted += project["optional-dependencies"][extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[0] == "torch==2.13.0", "torch first, pinned"
    listed = [r for r in pip if not r.startswith("-e")]
    assert _names(listed) == _names(wanted)


def _fplib_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fplib"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fplib.")}
    return found


def test_imports_flow_one_way():
    files = {p.stem: p for p in (ROOT / "fplib").glob("*.py") if p.stem != "__init__"}
    files |= {p.parent.name: p for p in (ROOT / "fplib").glob("*/__init__.py")}  # packages (fplib.pretrained)
    modules = sorted(files)
    assert set(modules) <= set(LAYERS), f"add new modules to LAYERS: {set(modules) - set(LAYERS)}"
    for m in modules:
        deps = _fplib_imports(files[m])
        for d in deps:
            assert LAYERS.index(d) < LAYERS.index(m), f"fplib.{m} imports fplib.{d}, which sits above it"


def test_only_viz_imports_plotting():
    for p in (ROOT / "fplib").glob("*.py"):
        if p.stem == "viz":
            continue
        src = p.read_text()
        assert not re.search(r"^\s*(import|from) (matplotlib|IPython|ipywidgets)", src, re.M), p.name


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (it is in the dev extra)")
    r = subprocess.run([ruff, "check", "fplib", "tests", "benchmarks", "notebooks", "conftest.py"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
