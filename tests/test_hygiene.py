"""Repository hygiene: notebooks stripped and thin, parameters declared properly, profiles valid,
environment.yml and requirements.lock in step with pyproject.toml, imports flowing one way, lint clean."""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from fplib import notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks.list_notebooks()
# imports flow one way: a module may import only modules listed before it
LAYERS = [
    "runtime",
    "storage",
    "errors",
    "config",
    "runs",
    "audio",
    "features",
    "codes",
    "augment",
    "data",
    "synth",
    "generate",
    "losses",
    "models",
    "checkpoints",
    "engine",
    "optim",
    "train_config",
    "sources",
    "train",
    "trainer",
    "pretrained",
    "catalogue",
    "copies",
    "extraction",
    "corpus_packages",
    "corpus_render",
    "corpus_dedupe",
    "corpus",
    "heldout",
    "index",
    "db",
    "search",
    "streams",
    "listen",
    "segments",
    "landmark",
    "queries",
    "evaluate",
    "calibrate",
    "viz",
    "notebooks",
    "cli",
]


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS][:1] == ["01_generate_dataset"]


def _in_git() -> bool:
    return (
        shutil.which("git") is not None
        and subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True).returncode == 0
    )


def _committed(path: Path) -> str:
    """What git stores of a notebook (the index: what the next commit holds; nbstripout's filter strips it
    on the way there), or the file itself outside a clone."""
    if not _in_git():
        return path.read_text()
    return subprocess.run(
        ["git", "show", f":{path.relative_to(ROOT)}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.reads(_committed(path), as_version=4)
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
                f"{path.name}: needs `name: type = value  # why`: {line}"
            )
    for name, (ann, default) in params.items():
        from fplib.config import check_type

        check_type(name, default, ann)  # defaults fit their own annotations
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    validate = nb.cells[tagged[0] + 1].source
    assert "config.notebook_params(globals())" in validate, "the cell after the parameters validates them"
    assert first_code.source.lstrip().startswith(("import", "from")), "imports come first"


FORBIDDEN = [
    r"sys\.path",
    r"os\.chdir",
    r"^\s*[!%]pip",
    r"['\"]/(home|tmp|work|root|Users)/",
    r"[A-Z]:\\\\",
    r"^\s*(class|def) ",
]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_code_is_thin_and_portable(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for pattern in FORBIDDEN:
            assert not re.search(pattern, cell.source, re.M), f"{path.name}: forbidden {pattern!r} in:\n{cell.source}"
        if "parameters" not in cell.metadata.get("tags", []):  # declarations, one per line, cannot move to fplib
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


def _wanted() -> list[str]:
    """pyproject.toml's dependencies and the dev and bench extras (what `make demo` and `make test` need)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "bench"):
        wanted += project["optional-dependencies"][extra]
    return wanted


def _lock() -> dict[str, Version]:
    """requirements.lock as {canonical name: exact version}; every entry must be a plain `name==version`."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert (
            len(spec) == 1
            and spec[0].operator == "=="
            and "*" not in spec[0].version
            and not req.extras
            and req.marker is None
            and req.url is None
        ), f"requirements.lock: not an exact pin: {line}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"requirements.lock: {name} twice"
        pins[name] = Version(spec[0].version)
    return pins


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[0] == "torch==2.13.0", "torch first, pinned"
    listed = [r for r in pip if not r.startswith("-e")]
    as_set = {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier) for r in listed}
    assert as_set == {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier) for r in _wanted()}
    assert len(listed) == len(as_set), "a package listed twice in environment.yml"


def test_lock_pins_every_dependency_within_pyproject():
    pins = _lock()
    for r in _wanted():
        req = Requirement(r)
        name = canonicalize_name(req.name)
        assert name in pins, f"{r} is in pyproject.toml but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {r}: run `make lock`"
        )


def test_the_environment_is_exactly_the_lock():
    """What `make venv` installed (with uv, or pip where uv fails) is every pin of the lock, at its version."""
    from importlib import metadata

    wrong = {}
    for name, version in _lock().items():
        try:
            got = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            got = None
        if got != version:
            wrong[name] = (str(version), str(got))
    assert not wrong, f"installed packages differ from requirements.lock (lock, installed): {wrong}; run `make venv`"


def test_lock_is_cpu_only():
    pins = _lock()
    assert str(pins["torch"]) == "2.13.0+cpu", "torch must be the CPU build (a CUDA build is multi-GB)"
    cuda = sorted(n for n in pins if n.startswith(("nvidia-", "cuda-", "triton")))
    assert not cuda, f"requirements.lock pulls GPU packages: {cuda}"
    assert "fplib" not in pins, "the project itself is installed from the working tree (pip install -e .)"


def _fplib_imports(path: Path) -> set[str]:
    """The fplib modules a file imports, outside its ``if __name__ == "__main__":`` block (an entry point, such as
    ``python -m fplib.notebooks`` calling its command in fplib.cli, is not a dependency of the module)."""
    tree = ast.parse(path.read_text())
    tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fplib"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fplib.")}
    return found


def test_imports_flow_one_way():
    files = {p.stem: [p] for p in (ROOT / "fplib").glob("*.py") if p.stem != "__init__"}
    # packages (fplib.models, fplib.pretrained): every file of the package sits at the package's layer
    files |= {p.parent.name: sorted(p.parent.glob("*.py")) for p in (ROOT / "fplib").glob("*/__init__.py")}
    modules = sorted(files)
    assert set(modules) <= set(LAYERS), f"add new modules to LAYERS: {set(modules) - set(LAYERS)}"
    assert len(files["models"]) >= 3, "fplib.models is a package of one module per family"
    for m in modules:
        for path in files[m]:
            for d in _fplib_imports(path) - {m}:  # a package's files may import each other
                assert LAYERS.index(d) < LAYERS.index(m), f"{path.name} of fplib.{m} imports fplib.{d}, above it"


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
    r = subprocess.run(
        [ruff, "check", "fplib", "tests", "benchmarks", "notebooks", "conftest.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_pre_commit_hooks_pass(tmp_path):
    """The hooks of .pre-commit-config.yaml (ruff check, ruff format, nbstripout) change nothing: run on a
    copy of the tree (tracked and new files), so that a failing hook's fixes never touch this clone."""
    if not _in_git():
        pytest.skip("not a git clone")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    copy = tmp_path / "tree"
    for name in filter(None, files):
        if (ROOT / name).is_file() and not (ROOT / name).is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the hooks run the tools of this venv
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "GIT_CONFIG_GLOBAL": "/dev/null"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=copy, check=True, env=env)
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "pre-commit"),
            "run",
            "--all-files",
            "--show-diff-on-failure",
            "--color",
            "never",
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, (
        f"a pre-commit hook changed or refused files (`make format` applies the fixes):\n"
        f"{r.stdout[-6000:]}{r.stderr[-2000:]}"
    )


def test_no_reference_to_files_outside_the_repository():
    """What the code, notebooks and documents cite must be in the repository or in the README."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"FACTS\.md|MODELS\.md|HOUSE_STYLE\.md|\.\./shared/")
    this = Path(__file__).resolve()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.resolve() == this or path.suffix not in {".py", ".md", ".ipynb", ".yml", ".yaml", ".toml", ""}:
            continue
        if path.is_file() and pattern.search(path.read_text(errors="ignore")):
            offenders.append(name)
    assert not offenders, f"cite files that are not in the repository: {offenders}"


def test_running_a_notebook_in_jupyterlab_leaves_git_status_clean(tmp_path):
    """JupyterLab, started by `make lab`, saves the numbered notebooks through fplib.notebooks.strip_on_save:
    a notebook run there, with outputs, execution counts, widget state and Lab's language metadata, is saved
    byte for byte as committed, so `git status` stays clean. Saved any other way (another editor), `make`'s
    nbstripout git filter strips it on its way into a commit. Checked in a throw-away clone with this clone's
    filter settings and Jupyter's own contents manager."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    if not _in_git():
        pytest.skip("not a git clone")

    def git(*args: str, cwd: Path = ROOT) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    clean = subprocess.run(
        ["git", "config", "--get", "filter.nbstripout.clean"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "nbstripout" in clean and "--keep-id" in clean, "`make test` or `make nbstripout` installs the filter"
    assert all(k in clean for k in notebooks.LAB_METADATA)  # the filter strips what the save hook strips
    clone = tmp_path / "c"
    git("clone", "-q", "--no-checkout", str(ROOT), str(clone))
    for key in ("filter.nbstripout.clean", "filter.nbstripout.smudge", "filter.nbstripout.required"):
        git("config", key, git("config", "--get", key), cwd=clone)
    (clone / ".git" / "info" / "attributes").write_text((ROOT / ".git" / "info" / "attributes").read_text())
    git("reset", "-q", "--hard", cwd=clone)
    rel = "notebooks/02_train_static.ipynb"
    nb = nbformat.read(clone / rel, as_version=4)
    nb.metadata["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": "3.11.7",
    }
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}
    }
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text="epoch 1: loss 2.8\n"),
                nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="}),
            ]
            cell.metadata["execution"] = {"iopub.status.idle": "2026-12-06T20:00:00.000Z"}
    lab = FileContentsManager(root_dir=str(clone))
    lab.register_pre_save_hook(notebooks.strip_on_save)
    lab.save({"type": "notebook", "format": "json", "content": nb}, rel)
    assert git("status", "--porcelain", cwd=clone) == ""
    lab.save({"type": "notebook", "format": "json", "content": nb}, "outputs/02_run.ipynb")  # elsewhere: kept whole
    assert "epoch 1: loss" in (clone / "outputs" / "02_run.ipynb").read_text()
    nbformat.write(nb, clone / rel)  # saved by another editor, outputs and all: the filter strips what git stores
    assert "epoch 1: loss" in (clone / rel).read_text()
    git("add", rel, cwd=clone)
    assert git("status", "--porcelain", cwd=clone) == ""  # nothing to commit
    nb.cells[-1].source += "\n# an edit"  # a real change still shows
    nbformat.write(nb, clone / rel)
    git("add", rel, cwd=clone)
    assert git("status", "--porcelain", "--", "notebooks", cwd=clone) == f"M  {rel}"
