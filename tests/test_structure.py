"""Code structure: short functions with few positional parameters on the training and inference paths,
and no import cycle among the project's modules (function-level imports included: an import moved into
a function to dodge a cycle is still a cycle)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

MAX_LINES, MAX_POSITIONAL = 60, 5
# The training and inference paths: entry points, the engine, evaluation, inference, video, data path, losses, models.
PATHS = ["run.py", "train_upar_2024.py", "batch_engine.py", "test_video.py", "tools/engine", "tools/evaluation",
         "tools/inference", "cctv", "scripts/export_onnx.py", "dataset/build.py", "dataset/loader.py",
         "dataset/images.py", "dataset/augment.py", "losses", "models"]
SKIP_DIRS = {".venv", "tests", "exp_results", "data", ".git"}


def _files(paths: list[str]) -> list[Path]:
    out = []
    for p in paths:
        path = REPO / p
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_functions_on_the_training_and_inference_paths_are_short():
    too_long, too_many = [], []
    for path in _files(PATHS):
        rel = path.relative_to(REPO)
        for fn in _functions(path):
            lines = fn.end_lineno - fn.lineno + 1
            positional = [a.arg for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
            if lines > MAX_LINES:
                too_long.append(f"{rel}:{fn.lineno} {fn.name} ({lines} lines)")
            if len(positional) > MAX_POSITIONAL:
                too_many.append(f"{rel}:{fn.lineno} {fn.name} ({len(positional)} positional: {positional})")
    assert not too_long, f"functions over {MAX_LINES} lines: {too_long}"
    assert not too_many, f"functions with over {MAX_POSITIONAL} positional parameters: {too_many}"


def module_graph() -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its body (``from pkg import sub`` counts as pkg.sub)."""
    mods: dict[str, Path] = {}
    for p in REPO.rglob("*.py"):
        rel = p.relative_to(REPO)
        if set(rel.parts) & SKIP_DIRS:
            continue
        parts = list(rel.with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [resolve(f"{node.module}.{a.name}") if f"{node.module}.{a.name}" in mods
                           else resolve(node.module) for a in node.names]
            else:
                continue
            graph[m].update(t for t in targets if t and t != m)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_project_modules():
    graph = module_graph()
    assert "tools.engine.trainer" in graph and "tools.engine.loop" in graph["tools.engine.trainer"]
    assert find_cycles(graph) == []


ENTRY_SCRIPTS = {"run", "train_upar_2024", "test_video", "batch_engine"}


def test_no_library_module_imports_an_entry_script():
    graph = module_graph()
    offenders = sorted(f"{m} -> {d}" for m, deps in graph.items() if m not in ENTRY_SCRIPTS
                       for d in deps & ENTRY_SCRIPTS)
    assert offenders == []


# The floors of the house, ground floor first: a module imports only from its own floor or below.
FLOORS = [("configs",), ("dataset",), ("losses",), ("models",), ("tools",), ("cctv",), ("scripts",),
          ("run", "train_upar_2024", "test_video", "batch_engine")]


def test_imports_run_down_the_floors():
    floor = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
    graph = module_graph()
    up = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                if floor[d.split(".")[0]] > floor[m.split(".")[0]])
    assert up == [], f"imports that run back up the floors {FLOORS}: {up}"


def test_batch_engine_is_a_thin_reexport_of_the_engine():
    tree = ast.parse((REPO / "batch_engine.py").read_text(encoding="utf-8"))
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == [], f"batch_engine.py should only re-export tools.engine.loop: {defined}"
