"""Rule 1 of kfp_driver.py: a task's ``triggerPolicy.condition`` (CEL) as the open-source KFP v2
driver decides it. The driver compiles the condition (parses, then type-checks it) and evaluates
it over the task's resolved inputs; a compile or evaluation error, or a result that is no bool,
fails the driver (expression/expression.go Condition, 128-162).

Upstream: kubeflow/pipelines at tag 2.17.0, paths under backend/src/v2/, and google/cel-go at
tag v0.27.0 (2.17's go.mod; 2.14.0 to 2.16.1 pin v0.25.0, alike in all that follows). The
environment declares ExecutorInput's fields as variables and sets no option (expression.go:57-69,
cel.NewEnv), so ``inputs.parameter_values['x']`` is a google.protobuf.Value (msgToCELMap,
181-216): dyn to the checker, and at run time a double for any number.

- Syntax (parser/gen/CEL.g4): what the KFP SDK writes (kfp/compiler/pipeline_spec_builder.py,
  _single_binary_operation_to_cel_condition): ``|| && == != < <= > >=``, ``!`` and ``-``,
  ``int()``, ``double()``, parentheses, string literals (with CEL's escapes, parser/unescape.go),
  int, double, bool and null literals, and ``inputs.parameter_values['x']``. A number literal
  keeps its sign (``literal: sign=MINUS? tok=NUM_INT``): ``-1`` is the int -1. An even run of
  ``!`` or ``-`` is dropped (parser/parser.go VisitLogicalNot, VisitNegate).
- Types (checker; common/stdlib/standard.go): a literal has its own type, a parameter is dyn.
  ``==`` and ``!=`` take two values of one type (``_==_(A, A)``) unless one is dyn, so ``true ==
  1`` and ``1 == 1.0`` do not compile. Ordering takes two of one type too: its cross-type numeric
  overloads are filtered unless CrossTypeNumericComparisons is set (checker/env.go:94-97), and
  KFP does not set it. There is no ``int(bool)`` nor ``double(bool)``; ``!``, ``&&`` and ``||``
  take bools, ``-`` numbers.
- Values (common/types): equality is heterogeneous (util.go Equal; bool.go, int.go, double.go,
  string.go, null.go): values of different kinds are unequal, not an error (a parameter that is
  true ``== 1`` is false), numbers compare by value across int and double (compare.go: the int
  made a double), NaN equals nothing. Ordering: numbers across kinds, strings by bytes, bools;
  anything else is "no such overload", and NaN cannot be ordered. ``int(double)`` truncates and
  fails outside int64 (overflow.go doubleToInt64Checked), ``int(string)`` is strconv.ParseInt(s,
  10, 64), ``double(string)`` strconv.ParseFloat (string.go ConvertToType); negating int64's
  minimum fails. A missing parameter is an error, and ``&&`` (``||``) is false (true) when either
  side is, else an error if either side is one (interpreter/interpretable.go evalAnd, evalOr).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

INT64 = 2**63
_STRING = r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""
_TOKEN = re.compile(
    rf"""\s*(?:
        inputs\.parameter_values\[(?P<parameter>{_STRING})\]
      | (?P<string>{_STRING})
      | (?P<double>(?:[0-9]+\.[0-9]+|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)
      | (?P<int>0x[0-9a-fA-F]+|[0-9]+)
      | (?P<word>true|false|null|int|double)\b
      | (?P<symbol>&&|\|\||[=!<>]=|[-!<>()])
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\"'\\?`])|([0-3][0-7]{2})|[xX]([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})"
    r"|U([0-9a-fA-F]{8})|(.))",
    re.DOTALL,
)
_SIMPLE_ESCAPES = dict(zip("abfnrtv\"'\\?`", "\a\b\f\n\r\t\v\"'\\?`", strict=True))
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf|infinity)|nan", re.I
)
_RELATIONS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ORDERED = {"int", "double", "string", "bool"}


class CelError(ValueError):
    """Where cel-go fails to compile or evaluate a condition (the driver fails), or CEL beyond
    this model."""


@dataclass(frozen=True)
class _Error:
    """An evaluation error as a CEL value: ``&&`` and ``||`` drop it when the other side decides."""

    message: str


def condition_holds(condition: str, inputs: Mapping[str, Any]) -> bool:
    """Whether a ``triggerPolicy.condition`` holds for a task's resolved inputs; CelError where
    the driver fails on it, or for CEL beyond this model."""
    try:
        tree = _parse(condition)
        _check(tree)
        result = _evaluate(tree, inputs)
    except CelError as error:
        raise CelError(f"condition {condition!r}: {error}") from None
    if isinstance(result, _Error):
        raise CelError(f"condition {condition!r}: evaluation error: {result.message}")
    if not isinstance(result, bool):
        raise CelError(f"condition {condition!r}: return type is not bool, got {result!r}")
    return result


# Syntax: a tree of ("literal", value, type), ("parameter", name), ("call", function, argument)
# and ("binary", operator, left, right) nodes.


def _parse(condition: str) -> tuple:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(condition.rstrip()):
        token = _TOKEN.match(condition, position)
        if token is None:
            raise CelError(f"CEL beyond this model at {condition[position:]!r}")
        kind = token.lastgroup or ""  # every alternative is a named group
        tokens.append((kind, token[kind]))
        position = token.end()
    position = 0

    def peek(offset: int = 0) -> tuple[str, str]:
        return tokens[position + offset] if position + offset < len(tokens) else ("end", "")

    def take(expected: str | None = None) -> tuple[str, str]:
        nonlocal position
        token = peek()
        if token[0] == "end" or (expected is not None and token[1] != expected):
            found = "the end" if token[0] == "end" else repr(token[1])
            wanted = repr(expected) if expected else "an operand"
            raise CelError(f"expected {wanted}, found {found} (invalid, or beyond this model)")
        position += 1
        return token

    def chain(part: Callable[[], tuple], symbols: Collection[str]) -> Callable[[], tuple]:
        def parse() -> tuple:
            node = part()
            while peek()[0] == "symbol" and peek()[1] in symbols:
                node = ("binary", take()[1], node, part())
            return node

        return parse

    def unary() -> tuple:
        symbol, count = peek()[1], 0
        while peek() == ("symbol", symbol) and symbol in ("!", "-") and not signed_number():
            take()
            count += 1
        node = member()
        return node if count % 2 == 0 else ("call", f"{symbol}_", node)

    def signed_number() -> bool:
        """A minus before a number literal is the literal's sign (CEL.g4 ``literal``)."""
        return peek() == ("symbol", "-") and peek(1)[0] in ("int", "double")

    def member() -> tuple:
        sign = take()[1] if signed_number() else ""
        kind, text = take()
        if (kind, text) == ("symbol", "("):
            node = expression()
            take(")")
            return node
        if kind == "word" and text in ("int", "double"):
            take("(")
            node = ("call", text, expression())
            take(")")
            return node
        if kind == "parameter":
            return ("parameter", _unescape(text))
        if kind == "symbol":
            raise CelError(f"unexpected {text!r} (invalid, or beyond this model)")
        return _literal(kind, sign, text)

    relation = chain(unary, _RELATIONS)
    expression = chain(chain(relation, ("&&",)), ("||",))
    tree = expression()
    if position < len(tokens):
        raise CelError(f"unexpected {tokens[position][1]!r} (invalid, or beyond this model)")
    return tree


def _literal(kind: str, sign: str, text: str) -> tuple:
    """A literal's value and type (parser.go VisitInt, VisitDouble, VisitString)."""
    if kind == "int":
        number = int(sign + text.removeprefix("0x"), 16 if text.startswith("0x") else 10)
        if not -INT64 <= number < INT64:
            raise CelError(f"invalid int literal {sign}{text}")
        return ("literal", number, "int")
    if kind == "double":
        number = float(sign + text)
        if math.isinf(number):
            raise CelError(f"invalid double literal {sign}{text}")
        return ("literal", number, "double")
    if kind == "string":
        return ("literal", _unescape(text), "string")
    value, kind = {"true": (True, "bool"), "false": (False, "bool"), "null": (None, "null")}[text]
    return ("literal", value, kind)


def _unescape(quoted: str) -> str:
    def character(escape: re.Match) -> str:
        simple, octal, byte, short, long, other = escape.groups()
        if other is not None:
            raise CelError(f"unable to unescape string {quoted}")
        if simple is not None:
            return _SIMPLE_ESCAPES[simple]
        code = int(octal, 8) if octal else int(byte or short or long, 16)
        if 0xD800 <= code < 0xE000 or code > 0x10FFFF:
            raise CelError(f"invalid unicode code point in {quoted}")
        return chr(code)

    return _ESCAPE.sub(character, quoted[1:-1])


# Types: what cel-go's checker accepts.

_SIGNATURES = {  # function: (argument types, result type; None: the argument's)
    "!_": ({"bool"}, "bool"),
    "-_": ({"int", "double"}, None),
    "int": ({"int", "double", "string"}, "int"),
    "double": ({"int", "double", "string"}, "double"),
}


def _check(node: tuple) -> str:
    """The node's type; CelError where the checker finds no overload."""
    if node[0] == "literal":
        return node[2]
    if node[0] == "parameter":
        return "dyn"
    if node[0] == "call":
        kind = _check(node[2])
        accepted, result = _SIGNATURES[node[1]]
        if kind != "dyn" and kind not in accepted:
            raise CelError(f"found no matching overload for '{node[1]}' applied to '({kind})'")
        return result or kind
    symbol, kinds = node[1], (_check(node[2]), _check(node[3]))
    if symbol in ("&&", "||"):
        accepted = all(kind in ("bool", "dyn") for kind in kinds)
    elif "dyn" in kinds:
        accepted = symbol in ("==", "!=") or set(kinds) - {"dyn"} <= _ORDERED
    else:
        accepted = kinds[0] == kinds[1] and (symbol in ("==", "!=") or kinds[0] in _ORDERED)
    if not accepted:
        raise CelError(
            f"found no matching overload for '_{symbol}_' applied to '({kinds[0]}, {kinds[1]})'"
        )
    return "bool"


# Values: what cel-go's interpreter computes.


def _evaluate(node: tuple, inputs: Mapping[str, Any]) -> Any:
    """The node's value, or an _Error."""
    if node[0] == "literal":
        return node[1]
    if node[0] == "parameter":
        return (
            _protobuf(inputs[node[1]]) if node[1] in inputs else _Error(f"no such key: {node[1]}")
        )
    if node[0] == "call":
        value = _evaluate(node[2], inputs)
        return value if isinstance(value, _Error) else _FUNCTIONS[node[1]](value)
    symbol, left, right = node[1], _evaluate(node[2], inputs), _evaluate(node[3], inputs)
    if symbol in ("&&", "||"):
        decisive = symbol == "||"  # true decides ||, false decides &&
        if left is decisive or right is decisive:
            return decisive
        for value in (left, right):
            if not isinstance(value, bool):
                return value if isinstance(value, _Error) else _Error("no such overload")
        return not decisive
    for value in (left, right):
        if isinstance(value, _Error):
            return value
    if symbol in ("==", "!="):
        return _equal(left, right) == (symbol == "==")
    order = _order(left, right)
    return order if isinstance(order, _Error) else _RELATIONS[symbol](order, 0)


def _protobuf(value: Any) -> Any:
    """A parameter value as CEL reads a google.protobuf.Value: every number a double."""
    if isinstance(value, list):
        return [_protobuf(item) for item in value]
    if isinstance(value, dict):
        return {key: _protobuf(item) for key, item in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare_numbers(left: float, right: float) -> int:
    """compare.go: an int against a double is compared as a double, once in int64's range."""
    if isinstance(left, float) and isinstance(right, int):
        return -_compare_numbers(right, left)
    if isinstance(left, int) and isinstance(right, float):
        if not -float(INT64) <= right <= float(INT64):
            return 1 if right < 0 else -1
        left = float(left)
    return (left > right) - (left < right)


def _equal(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if _number(left) and _number(right):
        return not math.isnan(left) and not math.isnan(right) and not _compare_numbers(left, right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    return type(left) is type(right) and left == right


def _order(left: Any, right: Any) -> int | _Error:
    if _number(left) and _number(right):
        if math.isnan(left) or math.isnan(right):
            return _Error("NaN values cannot be ordered")
        return _compare_numbers(left, right)
    if type(left) is type(right) and isinstance(left, bool | str):
        return (left > right) - (left < right)
    return _Error("no such overload")


def _not(value: Any) -> Any:
    return not value if isinstance(value, bool) else _Error("no such overload")


def _negate(value: Any) -> Any:
    if not _number(value):
        return _Error("no such overload")
    return _Error("integer overflow") if value == -INT64 and isinstance(value, int) else -value


def _to_int(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or not -float(INT64) < value < float(INT64):
            return _Error("integer overflow")
        return int(value)
    if isinstance(value, str):
        parsed = int(value) if re.fullmatch(r"[+-]?[0-9]+", value) else None
        if parsed is None or not -INT64 <= parsed < INT64:
            return _Error("type conversion error from 'string' to 'int'")
        return parsed
    return value if _number(value) else _Error("no such overload")


def _to_double(value: Any) -> Any:
    if isinstance(value, str):
        if "_" in value or "0x" in value.lower():
            raise CelError(
                f"double({value!r}): Go's underscored and hexadecimal forms are beyond this model"
            )
        number = float(value) if _GO_FLOAT.fullmatch(value) else None
        if number is None or (math.isinf(number) and "inf" not in value.lower()):  # ErrRange
            return _Error("type conversion error from 'string' to 'double'")
        return number
    return float(value) if _number(value) else _Error("no such overload")


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "!_": _not,
    "-_": _negate,
    "int": _to_int,
    "double": _to_double,
}
