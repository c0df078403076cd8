"""The package's shape as docs/ARCHITECTURE.md draws it: rooms whose imports run one way
(cli → recipes → training → data, models, evaluation → core; cli → serving → inference →
models, evaluation → core), no cycle between modules, no library module that imports the
CLI, and inference that never pulls in corpus preparation, data or training."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "whisper_ft"
ROOMS = ("corpora", "data", "models", "training", "evaluation", "inference", "serving")
ROOMS += ("recipes", "cli")
# room → the rooms its modules may import (besides its own and the core)
MAY_IMPORT = {
    "core": set(),
    "corpora": set(),
    "data": set(),
    "models": set(),
    "evaluation": set(),
    "training": {"data", "models", "evaluation"},
    "inference": {"models", "evaluation"},
    "serving": {"inference"},
    "recipes": {"corpora", "data", "models", "evaluation", "training", "inference"},
    "cli": set(ROOMS) - {"cli"},
}
ENTRY_POINTS = {"whisper_ft.__main__"}  # `python -m whisper_ft` runs the CLI
INFERENCE = ("whisper_ft.inference", "whisper_ft.serving")
NOT_FOR_INFERENCE = ("whisper_ft.corpora", "whisper_ft.data", "whisper_ft.training")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "core"


def package_imports() -> dict[str, set[str]]:
    """Module → the package's modules it imports (inside functions too)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                names = [f"{base}.{alias.name}" for alias in node.names]
                targets |= {n for n in [base, *names] if n in paths}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in paths}
        graph[name] = targets - {name, "whisper_ft"}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def room_imports(graph: dict[str, set[str]]) -> dict[tuple[str, str], set[str]]:
    """(room, room it imports) → the module pairs behind that arrow."""
    arrows: dict[tuple[str, str], set[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            if room(module) != room(target):
                arrows.setdefault((room(module), room(target)), set()).add(f"{module} → {target}")
    return arrows


def test_every_module_lives_in_a_room_or_the_small_core():
    graph = package_imports()
    core = sorted(m for m in graph if room(m) == "core")
    assert core == [
        "whisper_ft",
        "whisper_ft.__main__",
        "whisper_ft._legacy",
        "whisper_ft.audio",
        "whisper_ft.decoding",
        "whisper_ft.files",
        "whisper_ft.manifest",
        "whisper_ft.precision",
        "whisper_ft.text",
    ]
    assert {room(m) for m in graph} == {"core", *ROOMS}


def test_rooms_import_one_way():
    arrows = room_imports(package_imports())
    assert ("training", "data") in arrows  # the walk sees imports between rooms
    wrong = sorted(
        pair
        for (source, target), pairs in arrows.items()
        if target != "core" and target not in MAY_IMPORT[source]
        for pair in pairs
        if pair.split(" → ")[0] not in ENTRY_POINTS
    )
    assert not wrong, wrong


def test_no_library_module_imports_the_cli():
    graph = package_imports()
    importers = sorted(
        m
        for m, targets in graph.items()
        if room(m) != "cli" and m not in ENTRY_POINTS and any(room(t) == "cli" for t in targets)
    )
    assert not importers, importers


def test_no_module_imports_one_that_imports_it_back():
    graph = package_imports()
    assert len(graph) > 20  # the walk found the package
    cycles = sorted(f"{a} -> … -> {a}" for a in graph if a in reachable(graph, a))
    assert not cycles, cycles


def test_inference_depends_on_neither_corpus_preparation_nor_data_nor_training():
    graph = package_imports()
    starts = [m for m in graph if m.startswith(INFERENCE)]
    assert len(starts) >= 6
    for start in starts:
        pulled = {m for m in reachable(graph, start) if m.startswith(NOT_FOR_INFERENCE)}
        assert not pulled, f"{start} imports {sorted(pulled)}"
