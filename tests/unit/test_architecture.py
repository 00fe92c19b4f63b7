"""The rules of docs/architecture.md, read off the source: adapters stand alone, one module moves jobs between
states, one module renames temporaries into place, and what runs in a Lambda or the API loads no JAX."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "af2jobs"
ROOT = SRC.parents[1]


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("side,other", [("aws", "local"), ("local", "aws")])
def test_no_adapter_imports_the_other_modes_adapters(side: str, other: str) -> None:
    offenders = {p.name: sorted(i for i in _imports(p) if i.startswith(f"af2jobs.adapters.{other}"))
                 for p in _modules(SRC / "adapters" / side)}
    assert not {name: found for name, found in offenders.items() if found}


def test_the_lambda_functions_and_the_aws_runner_import_no_local_adapter() -> None:
    paths = _modules(ROOT / "functions") + _modules(SRC / "awsrun")
    offenders = {p.relative_to(ROOT).as_posix(): sorted(i for i in _imports(p) if i.startswith("af2jobs.adapters.local"))
                 for p in paths}
    assert not {name: found for name, found in offenders.items() if found}


def _calls(path: Path, attribute: str) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute]


def test_only_the_lifecycle_moves_a_job_between_states() -> None:
    # The repositories implement transition(); everyone else moves a job through af2jobs.lifecycle.
    allowed = {SRC / "lifecycle.py"}
    movers = {p.relative_to(SRC).as_posix(): lines for p in _modules(SRC) if p not in allowed
              if (lines := _calls(p, "transition"))}
    assert movers == {}


def test_only_the_atomic_module_renames_a_temporary_into_place() -> None:
    calls = ("os.replace(", "tempfile.mkstemp(", "tempfile.mkdtemp(", "NamedTemporaryFile(")
    writers = {p.relative_to(SRC).as_posix(): [c for c in calls if c in p.read_text(encoding="utf-8")]
               for p in _modules(SRC) if p.name != "atomic.py"}
    assert {name: found for name, found in writers.items() if found} == {}


def test_the_api_the_lambdas_and_the_state_machine_tasks_load_no_jax() -> None:
    code = ("import sys; import af2jobs.api.app, af2jobs.wiring, af2jobs.awsrun.validate, af2jobs.awsrun.jobstate, "
            "af2jobs.awsrun.events, af2jobs.awsrun.notify, af2jobs.awsrun.batch, af2jobs.awsrun.stage, af2jobs.jobrun, "
            "af2jobs.lifecycle, af2jobs.cli.main; print(sorted(m for m in ('jax', 'haiku', 'alphafold') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def _graph() -> dict[str, set[str]]:
    """Each af2jobs module -> the af2jobs modules it imports anywhere in it (at the top, in a function, or for type
    checking only): an import cycle in any of these is a cycle between the rooms."""
    names = {}
    for path in _modules(SRC):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in names and m != name and m != "af2jobs"}
    return graph


def test_no_two_modules_import_each_other_even_through_others() -> None:
    graph = _graph()
    cycles = []
    for start in graph:  # a path back to the start through what it imports
        seen, todo = set(), [(start, (start,))]
        while todo:
            node, path = todo.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    todo.append((nxt, (*path, nxt)))
    assert cycles == []


def test_one_record_runner_jobrun_is_the_only_caller_of_the_pipeline_s_stages() -> None:
    """Jobs (the local Worker, the Batch stages) and af2 predict run records through af2jobs.jobrun; pipeline.run's
    stages are called from jobrun.PipelineStages alone, and no second runner of records is left in the pipeline."""
    callers = sorted(p.relative_to(SRC).as_posix() for p in _modules(SRC)
                     if "af2jobs.pipeline.run" in _imports(p) and p.name != "run.py")
    assert callers in (["jobrun.py"], ["adapters/local/worker.py", "jobrun.py"])
    worker = (SRC / "adapters" / "local" / "worker.py").read_text(encoding="utf-8")
    assert "from af2jobs.pipeline.run import" not in worker  # its one import is the warm-up of JAX's import cost
    run = (SRC / "pipeline" / "run.py").read_text(encoding="utf-8")
    assert not [name for name in ("predict_records", "_record_begin", "RecordResult", "supplied_msas") if name in run]
    assert "af2jobs.jobrun" not in _imports(SRC / "pipeline" / "run.py")
