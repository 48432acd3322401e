"""Rule 4 of kfp_driver.py: parameter values as text, as the open-source KFP v2 backend's Go code
writes them into a pod's command line and executor input.

Upstream: kubeflow/pipelines at tag 2.17.0, paths under backend/src/v2/. The 2.17 driver
(pbValueToString, driver/util.go:138-163) writes a whole number with ``%d``, any other with
``%g`` (``1.2345675e+06``, ``1e-05``); the launcher (getPlaceholders,
component/launcher_v2.go:1139-1164) and PbValueToText (metadata/converter.go:29) with
``FormatFloat(f, 'f', -1, 64)`` (``1234567.5``, ``0.00001``). Booleans are ``true``/``false``;
lists and structs are Go JSON (json.Marshal: compact, keys sorted, ``<>&`` escaped). The executor
input ``{{$}}`` is protojson (launcher_v2.go:1054): numbers as encoding/json writes a float64
(``3``, not ``3.0``), no HTML escaping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any


def _digits(number: float) -> tuple[str, str, int]:
    """Go's shortest decimal digits of ``number`` (Python's repr finds the same ones): sign,
    digits and the decimal point's position (strconv's decimalSlice ``dp``)."""
    sign, digits, exponent = Decimal(repr(float(number))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return ("-" if sign else ""), text, len(text) + int(exponent)


def format_f(number: float) -> str:
    """``strconv.FormatFloat(number, 'f', -1, 64)``: shortest digits, no exponent."""
    sign, digits, point = _digits(number)
    if digits == "0":
        return f"{sign}0"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def format_e(number: float) -> str:
    """``strconv.FormatFloat(number, 'e', -1, 64)``: ``d.ddde+XX``."""
    sign, digits, point = _digits(number)
    exponent = point - 1 if digits != "0" else 0
    fraction = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{fraction}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def format_g(number: float) -> str:
    """Go's ``%g``: ``%e`` when the exponent is below -4 or at least 6 (strconv's shortest
    'g'), else ``%f``."""
    _, digits, point = _digits(number)
    return format_e(number) if digits != "0" and not -4 <= point - 1 < 6 else format_f(number)


def _json_number(number: float) -> str:
    """A float64 as encoding/json and protojson write it."""
    if number != 0 and not 1e-6 <= abs(number) < 1e21:
        return re.sub(r"e-0(\d)$", r"e-\1", format_e(number))
    return format_f(number)


def go_json(value: Any, escape_html: bool = True) -> str:
    """``value`` as Go writes JSON: compact, keys in ``value``'s order (sort a map's first),
    float64 numbers; with ``escape_html`` (json.Marshal) ``<>&`` escaped, without (protojson) not."""
    if isinstance(value, dict):
        items = (
            f"{go_json(str(k), escape_html)}:{go_json(v, escape_html)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(item, escape_html) for item in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return _json_number(value)
    text = json.dumps(value, ensure_ascii=False)
    if escape_html:
        for char in "<>&\u2028\u2029":
            text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def keys_sorted(value: Any) -> Any:
    """``value`` with every map's keys sorted, as Go marshals a map and protojson a Struct."""
    if isinstance(value, dict):
        return {key: keys_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [keys_sorted(item) for item in value]
    return value


def _text(value: Any, number: Callable[[float], str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, list | dict):
        return go_json(keys_sorted(value))
    return "" if value is None else str(value)


def as_text(value: Any) -> str:
    """A parameter value as the 2.17 driver writes it into an argument (pbValueToString)."""

    def number(value: float) -> str:
        whole = float(value).is_integer() and -(2**63) <= value < 2**63
        return str(int(value)) if whole else format_g(value)

    return _text(value, number)


def launcher_text(value: Any) -> str:
    """A parameter value as the launcher writes it into an argument (getPlaceholders), and as
    PbValueToText converts it for a STRING input (where null is "")."""
    return _text(value, format_f)
