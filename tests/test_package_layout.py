"""The package imports downward only: no module reaches, directly or round about, back to itself."""

import ast
from pathlib import Path

import pytest

from freemask.config import GenerateConfig
from freemask.errors import FreemaskError
from freemask.models import builtin_model_folder, load_sd_pipeline
from freemask.toyworld.model import TOY_SD_ID, toy_model_path

PACKAGE = Path(__file__).resolve().parents[1] / "freemask"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the freemask modules it imports anywhere in its body (deferred imports too).
    A package's own ``__init__`` re-exporting its submodules is not an edge back."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        graph[name] = {
            t for t in targets if not t.startswith(f"{name}.") and not name.startswith(f"{t}.")
        }
    return graph


def cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in sorted(graph[node]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_module_imports_itself_round_about() -> None:
    graph = import_graph()
    assert {"freemask.models", "freemask.active.loop", "freemask.cli.main"} <= graph.keys()
    cycles = [cycle for name in graph if (cycle := cycle_from(graph, name))]
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_model_loader_does_not_import_the_toy_world() -> None:
    assert not any(
        name.startswith("freemask.toyworld") for name in import_graph()["freemask.models"]
    )


def test_builtin_ids_resolve_through_the_registry() -> None:
    assert builtin_model_folder(TOY_SD_ID) == toy_model_path()


def test_an_unknown_builtin_id_names_the_known_ones() -> None:
    with pytest.raises(FreemaskError, match=r"builtin:no-such-model.*builtin:toy-sd"):
        load_sd_pipeline(GenerateConfig(model_id="builtin:no-such-model"))
