"""Credentials kept out of what freemask writes and prints.

A URI may carry a user and password (``https://user:password@mlflow.example.com``). freemask
accepts one as a tracking URI, but only the URI without them is stored, logged or printed: the
user and password go to MLflow through its own environment variables (freemask.tracking), and
every URI that freemask writes to a file, a log, MLflow or the terminal passes ``redact`` first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# scheme://userinfo@host: the userinfo runs to the last "@" before the path, the query or the
# fragment (as urllib.parse.urlsplit splits a netloc), so a password holding "@" is covered too.
_USERINFO = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
HIDDEN = "***"


def redact(text: str) -> str:
    """``text`` with the userinfo of every URI in it replaced by ``***``
    (``http://user:pass@host/x`` -> ``http://***@host/x``)."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda match: f"{match['scheme']}{HIDDEN}@", text)


def has_userinfo(text: str) -> bool:
    """Whether ``text`` holds a URI with a userinfo (``scheme://user[:password]@...``)."""
    return "@" in text and _USERINFO.search(text) is not None


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(``uri`` without its userinfo, the user, the password), percent-decoded as an HTTP client
    reads them; (``uri``, None, None) when it has none."""
    match = _USERINFO.match(uri)
    if match is None:
        return uri, None, None
    user, colon, password = match["userinfo"].partition(":")
    bare = match["scheme"] + uri[match.end() :]
    return bare, unquote(user), unquote(password) if colon else None
