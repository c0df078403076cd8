"""The package's shape as docs/ARCHITECTURE.md draws it: imports run one way (no cycle) and
inference never pulls in corpus preparation or training."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "whisper_ft"
INFERENCE = ("whisper_ft.transcribe", "whisper_ft.serve")
NOT_FOR_INFERENCE = ("whisper_ft.corpora", "whisper_ft.module", "whisper_ft.data")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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


def test_no_module_imports_one_that_imports_it_back():
    graph = package_imports()
    assert len(graph) > 20  # the walk found the package
    cycles = sorted(f"{a} -> … -> {a}" for a in graph if a in reachable(graph, a))
    assert not cycles, cycles


def test_inference_depends_on_neither_corpus_preparation_nor_training():
    graph = package_imports()
    for start in INFERENCE:
        pulled = {m for m in reachable(graph, start) if m.startswith(NOT_FOR_INFERENCE)}
        assert not pulled, f"{start} imports {sorted(pulled)}"
