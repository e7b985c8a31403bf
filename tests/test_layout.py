"""The package's shape: no import cycle between harness modules (lazy imports inside functions count),
every module imports on its own, and no result file name is spelled out outside its owner."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def modules(package: str = "harness") -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the harness modules it imports anywhere in its file (top level or inside a function)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        tree = ast.parse(path.read_text())
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
            block.body = []  # annotations only: not an import at run time
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in mods and c != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_harness_modules():
    graph = import_graph()
    assert len(graph) > 30 and "harness.core.parallel" in graph["harness.trial.trainer"]
    assert cycles(graph) == []


# The package's floors, lowest first (docs/architecture.md): a module imports its own floor and those below, never
# one above; analysis/ sits on the harness and only the command layer and above import it.
LAYERS = [
    ("core",),
    ("store",),
    ("data", "models", "methods", "engines", "metrics"),
    ("trial",),
    ("evaluation", "bench"),
    ("planning",),
    ("tracker",),
    ("execution",),
    ("commands",),
    ("cli", "__main__", "moved"),
]
COMMAND_LAYER = LAYERS.index(("commands",))


def floor(module: str) -> int:
    """The floor of a harness module (harness/__init__.py, which only installs the old paths, is the top's)."""
    part = module.split(".")[1] if module.count(".") else "moved"
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_every_harness_module_has_a_floor():
    top = {p.stem if p.suffix else p.name for p in (ROOT / "harness").iterdir() if p.name != "__pycache__"}
    assert top - {"__init__"} == {name for names in LAYERS for name in names}


def test_no_module_imports_a_floor_above_its_own():
    graph = import_graph()
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if d != "harness" and floor(d) > floor(m)]
    assert upward == []


def test_the_layer_test_sees_an_upward_import():
    assert floor("harness.core.config") < floor("harness.trial.trainer") < floor("harness.execution.sweep")
    assert floor("harness.methods.fge") == floor("harness.models.wrn")


def test_below_the_command_layer_the_harness_never_imports_analysis():
    """analysis/ reads result files and imports the harness; the sweep receives what it needs of it
    (harness.execution.sweep.Analysis) from the command layer."""
    offenders = []
    for name, path in modules().items():
        if name.count(".") and floor(name) >= COMMAND_LAYER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "analysis":
                offenders.append(f"{name}: from {node.module}")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "analysis" for a in node.names):
                offenders.append(f"{name}: import analysis")
    assert offenders == []


def test_old_module_paths_still_import_with_a_warning():
    """A plugin written against 0.1's flat paths keeps working for one release (harness.moved)."""
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import harness.core.registry as new\n"
        "try:\n    from harness.registry import Option\nexcept DeprecationWarning as w:\n    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "from harness.registry import Option\nfrom harness import config\n"
        "import harness.core.config\n"
        "print(Option is new.Option, config is harness.core.config)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "harness.registry moved to harness.core.registry; the old path stops working in the next release"
    assert out[1] == "True True"


def test_nothing_of_ours_imports_an_old_path():
    """The deprecated paths are for other people's plugins: the harness, its analysis, tests, benchmarks and examples
    import the new ones (``from harness import trainer`` included)."""
    from harness.moved import MOVED

    offenders = []
    for folder in ("harness", "analysis", "tests", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n in MOVED]
    assert offenders == []


def test_every_module_says_its_job_in_its_docstring():
    bare = [
        str(path.relative_to(ROOT))
        for package in ("harness", "analysis")
        for path in sorted((ROOT / package).rglob("*.py"))
        if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert bare == []


def test_every_old_path_names_a_module_that_exists():
    from harness.moved import MOVED

    present = set(modules())
    new = {name for value in MOVED.values() for name in ([value] if isinstance(value, str) else value)}
    assert len(MOVED) == 37 and new <= present and not set(MOVED) & present
    code = "import warnings; warnings.simplefilter('ignore')\n"
    code += "from harness.results import TrialFolder, write_json, CorruptFile"
    subprocess.run([sys.executable, "-c", code], check=True)  # a split module: its public names under the old path


def test_the_torch_level_distribution_helpers_are_a_leaf():
    assert import_graph()["harness.core.parallel"] == set()


def test_the_trial_schema_knows_no_method_and_needs_no_torch():
    """TrialConfig validates its own keys without the registries (harness.trial.catalog joins the two)."""
    assert not {m for m in import_graph()["harness.core.config"] if m.startswith(("harness.methods", "harness.models"))}
    code = "import sys; from harness.core.config import TrialConfig; TrialConfig.model_validate({'width': 2}); "
    code += (
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('harness.methods', 'harness.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# Third-party libraries are imported once; each harness module is then imported first in a fresh fork,
# which is what finds an import cycle or a missing import among the harness's own modules.
_IMPORT_EACH = """
import os, sys, traceback
import numpy, torch, pydantic, yaml  # third-party, imported once: each fork checks the harness's own order
import matplotlib.pyplot, mlflow.tracking, pandas, ray.train, ray.tune, scipy.stats
failed = 0
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException:
            print(f"{name}: {traceback.format_exc()[-500:]}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(failed)
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    names = [n for n in sorted(modules()) + sorted(modules("analysis")) if not n.endswith("__main__")]
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(names) > 50  # the package and analysis were both found


def _schema_names() -> set[str]:
    """The names harness.core.schema owns that cannot be mistaken for a word: file names (a dot inside) and the
    members of logits.npz."""
    from harness.core import schema

    values = {v for k, v in vars(schema).items() if k.isupper() and isinstance(v, str)}
    files = {v for v in values if "." in v.strip(".")}
    members = {schema.TEST_LOGITS, schema.TEST_LABELS, schema.VAL_LOGITS, schema.VAL_LABELS}
    return files | members | {schema.LOCK, schema.KEPT_BACK, schema.RAY_TRAIN_DIR, schema.PUSHED}


def _literal_offenders(paths: list[Path], names: set[str]) -> list[str]:
    """String literals (docstrings aside) equal to a name, or a path with it as one segment."""
    offenders = []
    for path in paths:
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                segments = set(node.value.replace("'", "/").replace(" ", "/").split("/"))
                hit = names & segments
                if hit:
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    offenders.append(f"{where}:{node.lineno}: {sorted(hit)}")
    return offenders


def test_file_and_member_names_have_one_home():
    """Every file of a trial, suite or storage folder and every member of logits.npz is named in harness.core.schema
    only: the package, the analysis and the tests' helpers import the names."""
    names = _schema_names()
    assert {"metrics.json", "config.yaml", "driver.lock", "test_logits", "val_labels", "mlflow.db"} <= names
    paths = sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "analysis").rglob("*.py"))
    paths = [p for p in paths if p.name != "schema.py"] + [ROOT / "tests" / "helpers.py"]
    assert _literal_offenders(paths, names) == []


def test_the_name_check_finds_a_literal(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""metrics.json in a docstring is fine."""\nPATH = "results/x/metrics.json"\nOK = f"{x}.json"\n'
    )
    assert _literal_offenders([planted], _schema_names()) == [f"{planted}:2: ['metrics.json']"]


@pytest.mark.slow  # a fresh interpreter builds a whole report
def test_status_and_report_do_not_start_or_import_ray(tmp_path):
    """`harness status` and `harness report` read trial folders only: no Ray import (seconds, and no cluster)."""
    import numpy as np

    from helpers import finished_trial, trial

    suite_dir = tmp_path / "results" / "s"
    labels = np.arange(40) % 4
    for seed in (0, 1):
        cfg = trial(
            dataset="synthetic",
            synthetic_classes=4,
            depth=10,
            width=1,
            seed=seed,
            name="s",
            output_dir=tmp_path / "results",
        )
        finished_trial(cfg, np.eye(4)[labels][:, None] + 0.1 * seed, labels)
    code = (
        "import sys; from harness.cli import main; "
        f"assert main(['status', {str(suite_dir)!r}]) == 0; "
        f"assert main(['report', {str(suite_dir)!r}]) == 0; "
        "loaded = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; "
        "assert not loaded, loaded"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_exit_codes_have_one_home_and_the_guarantees_list_them():
    import re

    from harness.core.exit_codes import readme_line

    root = Path(__file__).resolve().parents[1]
    assert readme_line() in (root / "docs" / "guarantees.md").read_text()
    modules = [
        root / "harness" / "cli.py",
        root / "harness" / "execution" / "sweep.py",
        *(root / "harness" / "commands").glob("*.py"),
    ]
    assert len(modules) > 5
    for module in modules:
        text = module.read_text()
        bare = re.findall(r"return (?:\d+|\d+ if .*)$", text, re.M) + re.findall(r"sys\.exit\(\d+\)", text)
        assert not bare, f"{module}: exit codes as numbers ({bare}); use harness.core.exit_codes.ExitCode"
        assert module.name == "cli.py" or '"error:' not in text, (
            f"{module}: prints its own error line; raise what harness.core.exit_codes maps (harness.cli prints it)"
        )


def test_environment_variables_have_one_home_and_a_page():
    """Every `HARNESS_*` variable is declared (and documented) in harness/core/environment.py, read there only, when
    it is used (never while a module is imported: a process forked after its imports, the tests' commands, or a value
    set after the import would see a stale one), used somewhere, and listed in docs/environment.md."""
    import ast
    import re

    from harness.core.environment import VARIABLES, markdown_table

    used: set[str] = set()
    for package in ("harness", "analysis"):
        for name, path in modules(package).items():
            if name == "harness.core.environment":
                continue
            text = path.read_text()
            names = set(re.findall(r"HARNESS_[A-Z][A-Z0-9_]*", text))
            assert names <= set(VARIABLES), (
                f"{path}: {sorted(names - set(VARIABLES))} not in harness/core/environment.py"
            )
            read = re.findall(r"(?:environ(?:\.get)?[(\[]|getenv\()\s*[\"']HARNESS_", text)
            assert not read, f"{path}: reads a HARNESS_ variable itself; use harness.core.environment"
            used |= names | set(re.findall(r"environment\.\w+\(\s*\"(HARNESS_[A-Z0-9_]+)", text))
            tree = ast.parse(text)
            in_functions = {  # a function's body runs when called; its defaults and decorators, at import
                id(node)
                for scope in ast.walk(tree)
                if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                for statement in (scope.body if isinstance(scope.body, list) else [scope.body])
                for node in ast.walk(statement)
            }
            at_import = [
                node.lineno
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and getattr(node.func.value, "id", None) == "environment"
                and id(node) not in in_functions
            ]
            assert not at_import, f"{path}:{at_import}: a HARNESS_ variable read at import; read it where it is used"
    assert set(VARIABLES) <= used, f"declared but never used: {sorted(set(VARIABLES) - used)}"
    assert markdown_table() in (ROOT / "docs" / "environment.md").read_text()


def test_no_long_function_without_a_reason():
    """A function over ~80 lines says why in its docstring ("Long: ..."); the others are split."""
    long = []
    for package in ("harness", "analysis"):
        for path in modules(package).values():
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 85:
                    if "Long:" not in (ast.get_docstring(node) or ""):
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, f"functions of 85 lines or more with no reason in their docstring: {long}"


def test_progress_keys_have_one_home():
    """The keys of a trial's reports to its driver are spelled in execution.progress only (TrialReport's fields)."""
    from dataclasses import fields

    from harness.execution.progress import TrialReport

    keys = {f.name for f in fields(TrialReport)} - {"trial_id", "epoch", "metrics", "done", "train_loss", "test_top1"}
    assert {"in_epoch", "steps_per_s", "evaluating", "epoch_time_s"} <= keys
    keys -= {"epoch_time_s", "step", "steps"}  # also history.csv's column / common words: checked by the reader
    offenders = []
    for path in sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "analysis").rglob("*.py")):
        if path.name == "progress.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in keys:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_the_architecture_map_names_every_module():
    """Each top-level module and package of harness/ has its line in docs/architecture.md's map, each module of a
    floor package its indented line under it, and no line names a module that is gone."""
    import re

    block = (ROOT / "docs" / "architecture.md").read_text()
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    named, package = set(), None
    for line in block.splitlines():
        top = re.match(r"^  (\w+\.py|\w+/)", line)
        inner = re.match(r"^    (\w+\.py)", line)
        if top:
            package = top.group(1)
            named.add(package)
        elif inner:
            named.add(package + inner.group(1))
    harness = ROOT / "harness"
    present = {p.name for p in harness.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    present |= {p.name + "/" for p in harness.iterdir() if (p / "__init__.py").exists()}
    for listed in {name.split("/")[0] for name in named if "/" in name.rstrip("/")}:  # packages mapped module by module
        present |= {f"{listed}/{m.name}" for m in (harness / listed).glob("*.py") if m.name != "__init__.py"}
    assert named == present, (sorted(present - named), sorted(named - present))


def test_no_module_restates_a_list_of_metrics():
    """Which metrics a table, a summary or a recomputation covers is derived from the declarations
    (harness.metrics: group, headline, calibrated_of), never a hand-written list of names elsewhere."""
    from harness.metrics import METRICS

    names = set(METRICS.names())
    names |= {f"{n}_mean" for n in names}
    offenders = []
    for path in sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "analysis").rglob("*.py")):
        if path == ROOT / "harness" / "metrics" / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                listed = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
                if len(listed) >= 2:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {listed}")
    assert offenders == []


def test_the_longest_first_files_exist():
    """tests/conftest.py's LONGEST_FIRST names test files that are there (a renamed one would silently go last)."""
    from conftest import LONGEST_FIRST

    assert [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).is_file()] == []
