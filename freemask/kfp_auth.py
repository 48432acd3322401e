"""How ``freemask submit`` and ``schedule`` reach the Kubeflow Pipelines API: one credential, the
client that sends it, and the namespace rule of multi-user KFP.

One credential per command, named by its flag (two at once is an error):

==========  ==============================================================  ======================
mode        where it comes from                                             what each request has
==========  ==============================================================  ======================
token       ``--token-file PATH``, or ``$FREEMASK_KFP_TOKEN``               Authorization: Bearer
in-cluster  ``--in-cluster``: the pod's projected token; also taken when    Authorization: Bearer
            no flag is given and the file exists
cookie      ``--cookie-file PATH``: ``authservice_session=...`` or          Cookie
            ``oauth2_proxy_kubeflow=...``
IAP         ``--iap-client-id ID``: a Google ID token for that audience     Authorization: Bearer
none        nothing given, no in-cluster token                              nothing
==========  ==============================================================  ======================

kfp.Client finds no credential itself once ``host`` is set: ``Client._load_config``
(kfp/client/client.py) returns right after ``if host:`` unless ``existing_token`` or
``client_id`` was given, so the in-cluster token is never read and nothing is sent. Here the
credential is resolved first and handed to kfp.Client as the one thing it sends. Secrets come
from files or the environment, never from a command-line value (shell history, ``ps``), and no
message, output or ``repr`` holds one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freemask.errors import FreemaskError

TOKEN_ENV = "FREEMASK_KFP_TOKEN"
# The path and its override as kfp names them (kfp/client/__init__.py, KF_PIPELINES_SA_TOKEN_PATH
# and KF_PIPELINES_SA_TOKEN_ENV, read by set_volume_credentials.ServiceAccountTokenVolumeCredentials):
# where Kubeflow projects a pod's token with the audience pipelines.kubeflow.org.
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")
IN_CLUSTER_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
# kfp.Client.__init__ reads this as its IAP ``client_id`` (kfp/client/client.py,
# KF_PIPELINES_IAP_OAUTH2_CLIENT_ID_ENV); the CLI takes it as --iap-client-id, so that it never
# selects a mode behind the flags' back.
IAP_CLIENT_ID_ENV = "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID"
# A header value: visible ASCII, no spaces (a newline would split the request's headers).
HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 6265 token
REFUSED_HINTS = {
    "token": "give a fresh token",
    "in-cluster": "check the pod's projected token (audience pipelines.kubeflow.org) and that "
    "its service account may use the namespace",
    "cookie": "log in to the Kubeflow dashboard again and copy a fresh cookie",
    "iap": "check that the identity is an IAP-secured Web App User and that --iap-client-id is "
    "the IAP's OAuth client id",
    "none": f"give one: --token-file, ${TOKEN_ENV}, --cookie-file, --iap-client-id or --in-cluster",
}


class CredentialError(FreemaskError):
    """A KFP credential is ambiguous, unreadable or malformed."""


class KfpApiError(FreemaskError):
    """The KFP API refused a request, could not be reached, or needs a namespace."""


@dataclass(frozen=True)
class KfpCredentials:
    """The one credential sent to the KFP API: ``mode`` (a key of REFUSED_HINTS), ``source``
    (where it came from, safe to print) and the secret, a bearer token or a Cookie header."""

    mode: str
    source: str
    bearer: str | None = field(default=None, repr=False)
    cookie: str | None = field(default=None, repr=False)

    def redact(self, text: str) -> str:
        """``text`` with every secret of this credential (each cookie value too) blanked out."""
        secrets = [self.bearer, self.cookie]
        secrets += [pair.partition("=")[2] for pair in (self.cookie or "").split("; ")]
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text


def resolve_credentials(
    token_file: Path | None = None,
    cookie_file: Path | None = None,
    iap_client_id: str | None = None,
    in_cluster: bool = False,
    environ: Mapping[str, str] | None = None,
) -> KfpCredentials:
    """The credential the flags and ``environ`` (default: os.environ) name; with none named, the
    in-cluster token when its file exists (as kfp.Client does in a pod without ``host``), else none.

    Raises CredentialError when two modes are given, or the secret is unreadable or malformed.
    """
    environ = os.environ if environ is None else environ
    env_token = environ.get(TOKEN_ENV, "")
    given = {
        "--token-file": token_file is not None,
        f"${TOKEN_ENV}": bool(env_token),
        "--cookie-file": cookie_file is not None,
        f"--iap-client-id (or ${IAP_CLIENT_ID_ENV})": bool(iap_client_id),
        "--in-cluster": in_cluster,
    }
    chosen = [name for name, on in given.items() if on]
    if len(chosen) > 1:
        raise CredentialError(f"one KFP credential at a time: got {' and '.join(chosen)}")
    if token_file is not None:
        where = f"--token-file {token_file}"
        return KfpCredentials("token", where, bearer=read_token(token_file, "--token-file"))
    if env_token:
        return KfpCredentials("token", f"${TOKEN_ENV}", bearer=checked_token(env_token, TOKEN_ENV))
    if cookie_file is not None:
        where = f"--cookie-file {cookie_file}"
        return KfpCredentials("cookie", where, cookie=read_cookie(cookie_file))
    if iap_client_id:
        where = f"IAP ID token for {iap_client_id}"
        return KfpCredentials("iap", where, bearer=fetch_iap_token(iap_client_id))
    path = Path(environ.get(IN_CLUSTER_TOKEN_ENV) or IN_CLUSTER_TOKEN)
    if in_cluster or path.exists():
        where = f"in-cluster token {path}"
        return KfpCredentials("in-cluster", where, bearer=read_token(path, "in-cluster token"))
    return KfpCredentials("none", "no credentials")


def read_token(path: Path, flag: str = "--token-file") -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped); CredentialError naming
    ``flag`` and the path, never the content, when it is unreadable or not one token."""
    return checked_token(_read_secret(path, flag), f"{flag} {path}")


def checked_token(token: str, where: str) -> str:
    """``token`` stripped, if it can be sent as ``Authorization: Bearer <token>``."""
    token = token.strip()
    if not HEADER_VALUE.fullmatch(token):
        raise CredentialError(
            f"{where}: expected the bare token on one line (no 'Bearer ' prefix, no spaces)"
        )
    return token


def read_cookie(path: Path) -> str:
    """The Cookie header held in ``path``: NAME=VALUE pairs, one per line or joined by '; '."""
    text = _read_secret(path, "--cookie-file")
    pairs = [pair.strip() for line in text.splitlines() for pair in line.split(";")]
    pairs = [pair for pair in pairs if pair]
    if not pairs or not all(_is_cookie(pair) for pair in pairs):
        raise CredentialError(
            f"--cookie-file {path}: expected NAME=VALUE, e.g. authservice_session=<value> "
            "(oidc-authservice) or oauth2_proxy_kubeflow=<value> (oauth2-proxy)"
        )
    return "; ".join(pairs)


def _is_cookie(pair: str) -> bool:
    name, equals, value = pair.partition("=")
    return bool(equals and COOKIE_NAME.fullmatch(name) and HEADER_VALUE.fullmatch(value))


def _read_secret(path: Path, flag: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CredentialError(f"{flag} {path}: not readable ({exc.strerror})") from None
    except ValueError:
        raise CredentialError(f"{flag} {path}: not a text file") from None


def fetch_iap_token(client_id: str) -> str:
    """A Google-signed ID token with audience ``client_id`` (the OAuth client of the IAP in front
    of Kubeflow), from GOOGLE_APPLICATION_CREDENTIALS (a service-account key, or application-default
    credentials that impersonate one) or the metadata server (GCE, GKE Workload Identity).

    kfp.Client's own ``client_id`` path (kfp/client/auth.py, get_auth_token and
    get_auth_token_from_sa) gets the same token for a service account by signing a JWT with a
    ``target_audience`` claim; google-auth's fetch_id_token does that for each of these sources.
    Raises CredentialError when none is available or Google refuses.
    """
    from google.auth.exceptions import GoogleAuthError
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    try:
        token = id_token.fetch_id_token(Request(), client_id)
    except GoogleAuthError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CredentialError(
            f"--iap-client-id {client_id}: no Google ID token ({reason}); set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or run `gcloud auth "
            "application-default login --impersonate-service-account=SA_EMAIL`"
        ) from None
    return checked_token(token, "the IAP ID token")


def connect(
    host: str, credentials: KfpCredentials, namespace: str | None
) -> tuple[Any, str | None]:
    """A kfp.Client for ``host`` sending ``credentials``, and the runs' namespace: ``namespace``,
    or None on a single-user backend.

    Raises KfpApiError, before anything is created, when no namespace is given and the API's
    healthz says it is multi-user: there KFP refuses an experiment without one.
    """
    if not namespace and multi_user(host, credentials):
        raise KfpApiError(
            f"--namespace is required: {host} is a multi-user Kubeflow Pipelines (healthz "
            "multi_user: true); give your profile's namespace (--namespace NAME, or "
            "kubeflow.namespace in the config)"
        )
    return kfp_client(host, credentials, namespace or None), namespace or None


def kfp_client(host: str, credentials: KfpCredentials, namespace: str | None) -> Any:
    """A kfp.Client for ``host`` that sends ``credentials`` and no other.

    ``existing_token`` is the credential Client._load_config keeps with ``host`` set;
    ``cookies`` becomes kfp_server_api.ApiClient's Cookie header, and "" rather than None keeps
    out the cookie that Client.__init__ otherwise takes from ~/.config/kfp/context.json.
    ``namespace`` None rather than kfp's default "kubeflow": with that default Client.__init__
    falls back to the context file's namespace, or "" (kfp/client/client.py, Client.__init__
    and create_experiment), which a multi-user backend refuses.
    """
    import kfp

    with warnings.catch_warnings():
        # Client.__init__ warns on every call that it needs KFP >= 2.0.0-beta.2: not advice.
        warnings.filterwarnings("ignore", "This client only works", FutureWarning)
        return kfp.Client(
            host=host,
            namespace=namespace,  # type: ignore[arg-type]
            existing_token=credentials.bearer,
            cookies=credentials.cookie or "",
        )


def multi_user(host: str, credentials: KfpCredentials) -> bool:
    """Whether ``GET /apis/v2beta1/healthz`` says ``multi_user: true``: one request, with
    ``credentials`` sent as kfp.Client sends them (Client._load_config: ``api_key
    ['authorization']``, prefix Bearer), where Client.get_kfp_healthz would try five times,
    5 s apart.

    Raises KfpApiError when the answer is not KFP's JSON (a login page, say).
    """
    import kfp_server_api

    configuration = kfp_server_api.Configuration(host=host)
    if credentials.bearer:
        configuration.api_key["authorization"] = credentials.bearer
        configuration.api_key_prefix["authorization"] = "Bearer"
    client = kfp_server_api.ApiClient(configuration, cookie=credentials.cookie)
    response = kfp_server_api.HealthzServiceApi(client).healthz_service_get_healthz(
        _preload_content=False
    )
    try:
        healthz = json.loads(response.data)
    except ValueError:
        healthz = None
    if not isinstance(healthz, dict):
        raise KfpApiError(
            f"KFP API {host}: /apis/v2beta1/healthz answered with no KFP JSON (a login page?); "
            f"check --host and the credentials ({credentials.source})"
        )
    return healthz.get("multi_user") is True


@contextlib.contextmanager
def api_errors(host: str, credentials: KfpCredentials) -> Iterator[None]:
    """Turn the KFP API's refusals and connection failures inside the block into a one-line
    KfpApiError that says what to do and holds no secret."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        message = f"KFP API {host}: {exc.status} {exc.reason}"
        detail = _api_message(exc.body)
        if detail:
            message += f": {detail}"
        if exc.status in (401, 403):
            hint = REFUSED_HINTS[credentials.mode]
            message += f"; the credentials ({credentials.source}) were refused: {hint}"
        raise KfpApiError(credentials.redact(message)) from None
    except urllib3.exceptions.HTTPError as exc:
        reason = str(getattr(exc, "reason", None) or exc).rsplit(": ", 1)[-1]
        raise KfpApiError(credentials.redact(f"KFP API {host}: not reachable ({reason})")) from None


def _api_message(body: Any) -> str:
    """The first line of an API error body: KFP's JSON ``message`` (or ``error``), else text."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("error") or "")
    if text.lstrip().startswith("<"):
        return "an HTML page (a login page?)"
    return (text.strip().splitlines() or [""])[0][:200]
