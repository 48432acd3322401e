"""Which third-party packages a ``freemask`` command imports, read from the source with ``ast``.

An image family must hold every package its tasks' commands import, and nothing more. This walks
what running ``freemask COMMAND`` can import: the CLI's own module-level imports, then the
command's function and everything it references, across freemask modules. A module's top level
counts as soon as the module is imported; a function's or class's body only when something
reached refers to it (by name, ``module.name`` or an import inside a reached body). Imports under
``if TYPE_CHECKING:`` are skipped. The walk is conservative otherwise: a reached function counts
whole, whichever of its branches runs.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = ("freemask", "components", "pipelines")
ENTRY = ("freemask.cli.main", "main")  # the ``freemask`` console script


@dataclass
class _Module:
    name: str
    tree: ast.Module
    package: bool
    bindings: dict[str, str] = field(default_factory=dict)  # name -> module or module:attr
    defs: dict[str, ast.AST] = field(default_factory=dict)


class ImportGraph:
    """The freemask source under ``root``; ``third_party(units)`` walks it."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self._modules: dict[str, _Module | None] = {}

    def module(self, name: str) -> _Module | None:
        """The parsed module ``name`` of this tree, or None when it is not one of ours."""
        if name not in self._modules:
            base = self.root / name.replace(".", "/")
            path, package = base / "__init__.py", True
            if not path.exists():
                path, package = base.with_suffix(".py"), False
            if name.split(".")[0] not in OWN or not path.exists():
                self._modules[name] = None
            else:
                module = _Module(name, ast.parse(path.read_text()), package)
                for node in module.tree.body:
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                        module.defs[node.name] = node
                module.bindings = _bindings(module, module.tree.body, top_level=True)
                self._modules[name] = module
        return self._modules[name]

    def third_party(self, units: list[tuple[str, str | None]]) -> set[str]:
        """Top-level third-party packages reached from ``units``: (module, None) for a module's
        import, (module, name) for a function or class of it."""
        seen: set[tuple[str, str | None]] = set()
        found: set[str] = set()
        todo = list(units)
        while todo:
            unit = todo.pop()
            if unit in seen:
                continue
            seen.add(unit)
            name, attr = unit
            top = name.split(".")[0]
            if top not in OWN:
                if top not in sys.stdlib_module_names and top != "__future__":
                    found.add(top)
                continue
            parts = name.split(".")
            todo += [(".".join(parts[:i]), None) for i in range(1, len(parts))]
            module = self.module(name)
            if module is None:
                continue
            if attr is None:
                todo += self._module_level(module)
            elif attr in module.defs:
                todo.append((name, None))
                todo += self._references(module, [module.defs[attr]])
            elif attr in module.bindings:  # re-exported: follow the import
                todo.append(_unit(module.bindings[attr]))
            elif self.module(f"{name}.{attr}") is not None:
                todo.append((f"{name}.{attr}", None))
            else:
                todo.append((name, None))
        return found

    def _module_level(self, module: _Module) -> list[tuple[str, str | None]]:
        """What importing ``module`` runs: its statements, decorators and defaults, not bodies."""
        statements: list[ast.AST] = []
        for node in _runtime(module.tree.body):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                statements += [*node.decorator_list, *node.args.defaults]
                statements += [d for d in node.args.kw_defaults if d is not None]
            elif isinstance(node, ast.ClassDef):
                statements += [*node.decorator_list, *node.bases]
            else:
                statements.append(node)
        return self._imported(module.bindings) + self._references(module, statements)

    def _as_module(self, target: str | None) -> str | None:
        """The module a binding names (``m`` or ``m:sub`` where m.sub is a module), else None."""
        if target is None:
            return None
        name, attr = _unit(target)
        if attr is None:
            return name
        return f"{name}.{attr}" if self.module(f"{name}.{attr}") is not None else None

    def _imported(self, bindings: dict[str, str]) -> list[tuple[str, str | None]]:
        """The modules that imports binding ``bindings`` load (``from m import x``: m, and m.x
        when it is a module); the names themselves count only where they are used."""
        units: list[tuple[str, str | None]] = []
        for target in bindings.values():
            name, attr = _unit(target)
            units.append((name, None))
            if attr and self.module(f"{name}.{attr}") is not None:
                units.append((f"{name}.{attr}", None))
        return units

    def _references(self, module: _Module, nodes: list[ast.AST]) -> list[tuple[str, str | None]]:
        """Imports inside ``nodes`` and the module's names they refer to."""
        local = _bindings(module, nodes)
        units = self._imported(local)
        scope = {**module.bindings, **local}
        for node in nodes:
            for child in ast.walk(node):
                if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
                    target = self._as_module(scope.get(child.value.id))
                    if target is not None:
                        units.append((target, child.attr))
                if isinstance(child, ast.Name):
                    if child.id in scope:
                        units.append(_unit(scope[child.id]))
                    elif child.id in module.defs:
                        units.append((module.name, child.id))
        return units


def _unit(target: str) -> tuple[str, str | None]:
    name, _, attr = target.partition(":")
    return name, attr or None


def _runtime(body: list[ast.stmt]) -> list[ast.stmt]:
    """``body`` without ``if TYPE_CHECKING:`` blocks (imports for type checkers only)."""
    return [
        node
        for node in body
        if not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    ]


def _bindings(module: _Module, nodes: list[ast.AST], top_level: bool = False) -> dict[str, str]:
    """Names bound by the imports in ``nodes`` -> ``module`` or ``module:attr``; at the
    ``top_level``, imports inside function and class bodies do not count."""
    bindings: dict[str, str] = {}
    todo = list(nodes)
    while todo:
        child = todo.pop(0)
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.Import):
            for alias in child.names:
                if alias.asname:
                    bindings[alias.asname] = alias.name
                else:
                    bindings[alias.name.split(".")[0]] = alias.name
        elif isinstance(child, ast.ImportFrom):
            source = _absolute(module, child)
            for alias in child.names:
                bindings[alias.asname or alias.name] = f"{source}:{alias.name}"
        definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
        if not (top_level and isinstance(child, definition)):
            todo += list(ast.iter_child_nodes(child))
    return bindings


def _absolute(module: _Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    if not module.package:
        parts = parts[:-1]
    parts = parts[: len(parts) - node.level + 1]
    return ".".join([*parts, *([node.module] if node.module else [])])


def cli_commands(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """Every top-level ``freemask`` command -> (module, function), read from the CLI modules'
    ``app.command("name")(function)`` lines."""
    commands = {}
    for path in sorted((root / "freemask" / "cli").glob("*.py")):
        module = f"freemask.cli.{path.stem}"
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Call)):
                continue
            inner = node.func
            if (
                isinstance(inner.func, ast.Attribute)
                and inner.func.attr == "command"
                and isinstance(inner.func.value, ast.Name)
                and inner.func.value.id == "app"
                and inner.args
                and isinstance(inner.args[0], ast.Constant)
                and node.args
                and isinstance(node.args[0], ast.Name)
            ):
                commands[inner.args[0].value] = (module, node.args[0].id)
    return commands


def command_imports(commands: list[str], root: Path = ROOT) -> set[str]:
    """Top-level third-party packages that ``freemask COMMAND`` imports, for every command."""
    table = cli_commands(root)
    missing = [command for command in commands if command not in table]
    if missing:
        raise KeyError(f"no such freemask command: {', '.join(missing)}")
    units: list[tuple[str, str | None]] = [ENTRY, (ENTRY[0], None)]
    units += [table[command] for command in commands]
    return ImportGraph(root).third_party(units)
