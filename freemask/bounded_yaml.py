"""YAML with bounds: size, nesting and node count checked while the document is composed.

A YAML alias names a node without copying it, so a few hundred bytes of anchors can name 10^9
nodes ("billion laughs"): PyYAML composes and constructs them shared, but everything that walks
the data afterwards (validation, error messages, a dump) pays for every expanded node. Here the
document is composed from the parser's events with an explicit stack (PyYAML's own composer
recurses once per nesting level, yaml/composer.py): each alias counts as the expanded size of
the node it names (memoised per anchor, never expanded), and a document past a bound is refused
as soon as the count passes it, before any constructor builds a Python object. The bounds
(``MAX_BYTES``, ``MAX_NODES``, ``MAX_DEPTH``) are far above any real config or thesaurus: a
config of 65534 classes (the most 16-bit masks hold) is 66,000 nodes and 1 MB, the shipped
thesaurus 37 kB.

The nodes are PyYAML's (``yaml.ScalarNode`` ...), tagged by PyYAML's resolver, and ``construct``
builds them with ``yaml.SafeLoader``'s constructor, so the data is what ``yaml.safe_load``
returns for the same text (merge keys included); a recursive alias (a node that contains itself)
is refused, as is every tag the safe constructor refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from freemask.errors import ConfigError

MAX_BYTES = 16 * 2**20  # characters of one document stream (a file, an override's value)
MAX_NODES = 1_000_000  # nodes once every alias is expanded; mapping keys count as nodes
MAX_DEPTH = 64  # levels of nested lists and mappings

# The C parser where PyYAML has it (the same events, 25 times faster on a 2 MB config).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLimitError(ConfigError):
    """A YAML document past a bound: too large, too deep, too many nodes, or recursive."""


@dataclass
class Document:
    """One composed document: its root node (None when empty), and every key given twice in
    one mapping as (dotted key path, 1-based line); YAML keeps the last silently."""

    root: yaml.Node | None
    start_mark: Any = None
    repeated_keys: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _Open:
    """A collection node being composed: where its count started, the label of the child being
    composed (a key or an index), and for a mapping the pending key and the keys seen."""

    node: yaml.SequenceNode | yaml.MappingNode
    anchor: str | None
    counted_before: int
    label: str = ""
    key: yaml.Node | None = None
    seen: set[str] = field(default_factory=set)


def compose(text: str, source: str) -> Document:
    """Compose the single YAML document in ``text`` (``source`` names it in errors).

    Raises YamlLimitError (naming ``source``) past a bound, and yaml.YAMLError for text that
    is not YAML (with the problem's mark, as PyYAML reports it).
    """
    documents = compose_all(text, source)
    if len(documents) > 1:
        raise yaml.composer.ComposerError(
            "expected a single document in the stream",
            documents[0].start_mark,
            "but found another document",
            documents[1].start_mark,
        )
    return documents[0] if documents else Document(None)


def compose_all(text: str, source: str) -> list[Document]:
    """Compose every document of the stream ``text``, the bounds applying to all of them."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(
            f"{source}: {len(text)} characters of YAML; at most {MAX_BYTES} ({_mib(MAX_BYTES)})"
        )
    return list(_documents(yaml.parse(text, Loader=_LOADER), source))


def construct(root: yaml.Node | None) -> Any:
    """The Python data of a composed document, built as ``yaml.safe_load`` builds it."""
    if root is None:
        return None
    return yaml.constructor.SafeConstructor().construct_document(root)


def load(text: str, source: str) -> Any:
    """``yaml.safe_load`` within the bounds: the data of the single document in ``text``."""
    return construct(compose(text, source).root)


def load_all(text: str, source: str) -> list[Any]:
    """``yaml.safe_load_all`` within the bounds: the data of every document in ``text``."""
    return [construct(document.root) for document in compose_all(text, source)]


def check_size(size: int, source: str) -> None:
    """Refuse a file of ``size`` bytes before reading it when it is past ``MAX_BYTES``."""
    if size > MAX_BYTES:
        raise YamlLimitError(f"{source}: {size} bytes; at most {MAX_BYTES} ({_mib(MAX_BYTES)})")


def _mib(count: int) -> str:
    return f"{count / 2**20:g} MiB"


def _documents(events: Iterator[yaml.Event], source: str) -> Iterator[Document]:
    """The documents of an event stream, each composed with an explicit stack of open nodes."""
    resolver = yaml.resolver.Resolver()
    counted = 0  # nodes so far in the stream, aliases expanded
    for event in events:
        if not isinstance(event, yaml.DocumentStartEvent):
            continue  # stream start and end
        document = Document(None, event.start_mark)
        anchors: dict[str, tuple[yaml.Node, int | None]] = {}  # None: still open
        stack: list[_Open] = []
        for event in events:
            if isinstance(event, yaml.DocumentEndEvent):
                break
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                done = stack.pop()
                done.node.end_mark = event.end_mark
                if done.anchor is not None:
                    anchors[done.anchor] = (done.node, counted - done.counted_before)
                node = done.node
            elif isinstance(event, yaml.AliasEvent):
                node, size = _aliased(anchors, event, source)
                counted += size
            else:
                if len(stack) >= MAX_DEPTH:
                    line = event.start_mark.line + 1
                    raise YamlLimitError(
                        f"{source}:{line}: nested more than {MAX_DEPTH} levels deep"
                    )
                _check_anchor(anchors, event)
                counted += 1
                if isinstance(event, yaml.ScalarEvent):
                    node = _scalar(resolver, event)
                    if event.anchor is not None:
                        anchors[event.anchor] = (node, 1)
                else:
                    stack.append(_opened(resolver, event, counted - 1))
                    if event.anchor is not None:
                        anchors[event.anchor] = (stack[-1].node, None)
                    _add(stack[:-1], stack[-1].node, document)
                    continue
            if counted > MAX_NODES:
                line = getattr(event, "start_mark", None)
                where = f"{source}:{line.line + 1}" if line else source
                raise YamlLimitError(
                    f"{where}: more than {MAX_NODES} YAML nodes once aliases are expanded "
                    "(each alias counts as the nodes it names)"
                )
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                continue  # added to its parent when it opened
            _add(stack, node, document)
        yield document


def _add(stack: list[_Open], node: yaml.Node, document: Document) -> None:
    """Put a node composed (a scalar, an alias) or opened (a collection) into its parent."""
    if not stack:
        document.root = node
        return
    parent = stack[-1]
    if isinstance(parent.node, yaml.SequenceNode):
        parent.label = str(len(parent.node.value))
        parent.node.value.append(node)
    elif parent.key is None:
        parent.key = node
        if isinstance(node, yaml.ScalarNode):
            parent.label = node.value
            if node.value in parent.seen:
                path = ".".join(frame.label for frame in stack)
                document.repeated_keys.append((path, node.start_mark.line + 1))
            parent.seen.add(node.value)
        else:
            parent.label = "?"
    else:
        parent.node.value.append((parent.key, node))
        parent.key = None


def _aliased(
    anchors: dict[str, tuple[yaml.Node, int | None]], event: yaml.AliasEvent, source: str
) -> tuple[yaml.Node, int]:
    """The node an alias names and its expanded size."""
    line = event.start_mark.line + 1
    if event.anchor not in anchors:
        raise yaml.composer.ComposerError(
            None, None, f"found undefined alias {event.anchor!r}", event.start_mark
        )
    node, size = anchors[event.anchor]
    if size is None:
        raise YamlLimitError(f"{source}:{line}: alias *{event.anchor} is inside the node it names")
    return node, size


def _check_anchor(anchors: dict[str, tuple[yaml.Node, int | None]], event: yaml.NodeEvent) -> None:
    """PyYAML's rule: an anchor is defined once per document."""
    if event.anchor is not None and event.anchor in anchors:
        raise yaml.composer.ComposerError(
            f"found duplicate anchor {event.anchor!r}; first occurrence",
            anchors[event.anchor][0].start_mark,
            "second occurrence",
            event.start_mark,
        )


def _scalar(resolver: yaml.resolver.Resolver, event: yaml.ScalarEvent) -> yaml.ScalarNode:
    tag = event.tag
    if tag is None or tag == "!":
        tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
    return yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)


def _opened(
    resolver: yaml.resolver.Resolver, event: yaml.CollectionStartEvent, counted_before: int
) -> _Open:
    kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
    tag = event.tag
    if tag is None or tag == "!":
        tag = resolver.resolve(kind, None, event.implicit)
    node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
    return _Open(node, event.anchor, counted_before)
