"""Exception types: every error a user can fix is a FreemaskError with a specific message."""


class FreemaskError(Exception):
    """Base for errors caused by input the user controls (config, data, URIs).

    The CLI prints the message as one line and exits with code 2.
    """


class ConfigError(FreemaskError):
    """A config file is missing, unreadable or invalid."""


class StorageError(FreemaskError):
    """A URI or object path is invalid, missing or refused."""


class WriteConflictError(StorageError):
    """A write-once object already exists."""


class ManifestError(FreemaskError):
    """A manifest or one of its records is malformed or inconsistent."""


class ExportError(FreemaskError):
    """A dataset cannot be exported in the requested format."""


class DatasetImportError(FreemaskError):
    """A labelled dataset brought in (``freemask import``) cannot be read or mapped."""


class DegenerateResultError(FreemaskError):
    """A stage's result is empty or too small to ship (a round or export that keeps nothing)."""


def some_names(names: list[str], shown: int = 5) -> str:
    """The first ``shown`` of ``names`` (each cut to 40 characters), comma-separated, with how
    many there are in all when that is more: an error line stays one line for a run of
    thousands of classes, or of names thousands of characters long."""
    head = ", ".join(name if len(name) <= 40 else f"{name[:40]}..." for name in names[:shown])
    return head if len(names) <= shown else f"{head}, ... ({len(names)} in all)"
