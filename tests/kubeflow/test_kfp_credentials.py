"""The credential submit and schedule send to the KFP API (freemask.kfp_auth), checked on the
requests a fake KFP API on 127.0.0.1 receives: exactly one credential per mode, none of it in the
command's output or errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_submit_schedule import API, FakeKfpApi, submit_argv, write_config

from freemask.cli import main
from freemask.kfp_auth import (
    IAP_CLIENT_ID_ENV,
    IN_CLUSTER_TOKEN_ENV,
    TOKEN_ENV,
    CredentialError,
    KfpCredentials,
    read_cookie,
    read_token,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"
COOKIE = "authservice_session=MTcwMDAwMDAwMHxEdi1CQkFFQ180SUFBUkFCRUFBQV9" + "x" * 40
IAP_CLIENT_ID = "123456789-abcdef.apps.googleusercontent.com"
IAP_TOKEN = "eyJhbGciOiJSUzI1NiJ9.aWFwLWlkLXRva2Vu.Z29vZ2xl"
IAP_FLAG = f"--iap-client-id (or ${IAP_CLIENT_ID_ENV})"


def unwrapped(text: str) -> str:
    """``text`` with the console's line wrapping undone (words joined by single spaces)."""
    return " ".join(text.split())


def leaked(text: str) -> list[str]:
    """The test secrets found in ``text``, even split across wrapped lines."""
    glued = "".join(text.split())
    return [s for s in (TOKEN, IAP_TOKEN, COOKIE.partition("=")[2]) if s in glued]


@pytest.fixture
def iap_audiences(monkeypatch) -> list[str]:
    """google-auth's fetch_id_token, faked: records the audience asked for, returns IAP_TOKEN."""
    import google.oauth2.id_token

    audiences: list[str] = []

    def fetch_id_token(request, audience):
        audiences.append(audience)
        return IAP_TOKEN

    monkeypatch.setattr(google.oauth2.id_token, "fetch_id_token", fetch_id_token)
    return audiences


def given(mode: str, tmp_path: Path, monkeypatch) -> list[str]:
    """Set up ``mode``'s secret where a user would have it; return the flags that name it."""
    if mode == "--token-file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        return ["--token-file", str(tmp_path / "token")]
    if mode == TOKEN_ENV:
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        return []
    if mode in ("--in-cluster", "in-cluster file"):
        (tmp_path / "projected").mkdir()
        (tmp_path / "projected" / "token").write_text(TOKEN)
        monkeypatch.setenv(IN_CLUSTER_TOKEN_ENV, str(tmp_path / "projected" / "token"))
        return ["--in-cluster"] if mode == "--in-cluster" else []
    if mode == "--cookie-file":
        (tmp_path / "cookie").write_text(COOKIE + "\n")
        return ["--cookie-file", str(tmp_path / "cookie")]
    if mode == "--iap-client-id":
        return ["--iap-client-id", IAP_CLIENT_ID]
    assert mode == IAP_CLIENT_ID_ENV
    monkeypatch.setenv(IAP_CLIENT_ID_ENV, IAP_CLIENT_ID)
    return []


MODES = [
    # (how the user gives it, the Authorization header, the Cookie header, the output names)
    ("--token-file", f"Bearer {TOKEN}", None, "--token-file"),
    (TOKEN_ENV, f"Bearer {TOKEN}", None, f"${TOKEN_ENV}"),
    ("--in-cluster", f"Bearer {TOKEN}", None, "in-cluster token"),
    ("in-cluster file", f"Bearer {TOKEN}", None, "in-cluster token"),
    ("--cookie-file", None, COOKIE, "--cookie-file"),
    ("--iap-client-id", f"Bearer {IAP_TOKEN}", None, f"IAP ID token for {IAP_CLIENT_ID}"),
    (IAP_CLIENT_ID_ENV, f"Bearer {IAP_TOKEN}", None, f"IAP ID token for {IAP_CLIENT_ID}"),
]


@pytest.mark.parametrize(("mode", "authorization", "cookie", "named"), MODES)
def test_each_request_carries_exactly_the_chosen_credential(
    tmp_path, monkeypatch, capfd, kfp_environment, iap_audiences, mode, authorization, cookie, named
) -> None:
    flags = given(mode, tmp_path, monkeypatch)
    # A login kept by kfp's own CLI (~/.config/kfp/context.json) is not sent alongside.
    stale = {"namespace": "", "client_authentication_cookie": "authservice_session=stale"}
    (tmp_path / "kfp-context.json").write_text(json.dumps(stale))
    required = ("Authorization", authorization) if authorization else ("Cookie", cookie)
    with FakeKfpApi(require=required) as api:
        assert main(submit_argv(api, write_config(tmp_path), *flags)) == 0
    paths = {(r.method, r.path) for r in api.requests}
    assert {("GET", API + "/healthz"), ("POST", API + "/experiments"), ("POST", API + "/runs")} <= (
        paths
    )
    for request in api.requests:
        assert request.headers.get("authorization") == authorization, request.path
        assert request.headers.get("cookie") == cookie, request.path
    if "IAP" in named:
        assert set(iap_audiences) == {IAP_CLIENT_ID}
    output = capfd.readouterr()
    assert f"submitted run run-1 to {api.url} ({named}" in unwrapped(output.out)
    assert leaked(output.out + output.err) == []


@pytest.mark.parametrize(
    ("modes", "named"),
    [
        (["--token-file", "--cookie-file"], "--token-file and --cookie-file"),
        ([TOKEN_ENV, "--iap-client-id"], f"${TOKEN_ENV} and {IAP_FLAG}"),
        (["--cookie-file", IAP_CLIENT_ID_ENV], f"--cookie-file and {IAP_FLAG}"),
        (["--token-file", "--in-cluster"], "--token-file and --in-cluster"),
    ],
)  # fmt: skip
def test_two_credentials_are_refused_in_one_line_before_any_request(
    tmp_path, monkeypatch, capfd, kfp_api, iap_audiences, modes, named
) -> None:
    flags = [flag for mode in modes for flag in given(mode, tmp_path, monkeypatch)]
    assert main(submit_argv(kfp_api, write_config(tmp_path), *flags)) == 2
    output = capfd.readouterr()
    (line,) = output.err.splitlines()
    assert line == f"error: one KFP credential at a time: got {named}"
    assert kfp_api.requests == [] and iap_audiences == []
    assert leaked(output.out + output.err) == []


def test_a_refused_token_is_reported_in_one_line_without_the_token(
    tmp_path, monkeypatch, capfd, kfp_environment
) -> None:
    flags = given("--token-file", tmp_path, monkeypatch)
    # The fake echoes the Authorization header it refused in its body, as some proxies do.
    with FakeKfpApi(require=("Authorization", "Bearer another-token")) as api:
        assert main(submit_argv(api, write_config(tmp_path), *flags)) == 2
    output = capfd.readouterr()
    (line,) = output.err.splitlines()
    assert line.startswith(f"error: KFP API {api.url}: 401 Unauthorized: refused Bearer <redacted>")
    assert f"the credentials (--token-file {tmp_path / 'token'}) were refused" in line
    assert leaked(output.out + output.err) == []
    assert api.sent("POST", "/runs") == []


def test_a_login_page_instead_of_the_api_is_reported_in_one_line(
    tmp_path, capfd, kfp_environment
) -> None:
    # No credential at all, and an auth proxy answers with its sign-in page.
    with FakeKfpApi(require=("Cookie", COOKIE), login_page=True) as api:
        assert main(submit_argv(api, write_config(tmp_path))) == 2
    (line,) = capfd.readouterr().err.splitlines()
    assert "/apis/v2beta1/healthz answered with no KFP JSON (a login page?)" in line
    assert "(no credentials)" in line and api.sent("POST", "/runs") == []


def test_an_unreachable_api_is_reported_in_one_line(tmp_path, capfd, kfp_environment) -> None:
    with FakeKfpApi() as api:
        url = api.url  # closed once the block ends: nothing listens there any more
    assert main(submit_argv(api, write_config(tmp_path))) == 2
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"error: KFP API {url}: not reachable (")


def test_no_google_credentials_for_iap_is_one_line(tmp_path, monkeypatch, capfd, kfp_api) -> None:
    import google.auth.exceptions
    import google.oauth2.id_token

    def no_credentials(request, audience):
        raise google.auth.exceptions.DefaultCredentialsError("Neither metadata server nor ...")

    monkeypatch.setattr(google.oauth2.id_token, "fetch_id_token", no_credentials)
    argv = submit_argv(kfp_api, write_config(tmp_path), "--iap-client-id", IAP_CLIENT_ID)
    assert main(argv) == 2
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"error: --iap-client-id {IAP_CLIENT_ID}: no Google ID token (")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and kfp_api.requests == []


def test_the_token_comes_from_a_file(tmp_path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert read_token(tmp_path / "token") == TOKEN
    with pytest.raises(CredentialError, match=r"--token-file .*missing: not readable"):
        read_token(tmp_path / "missing")


@pytest.mark.parametrize("content", [f"Bearer {TOKEN}", f"{TOKEN}\n{TOKEN}", "", f"{TOKEN}\x00"])
def test_a_token_file_that_is_not_one_token_is_refused_without_echoing_it(
    tmp_path, content
) -> None:
    (tmp_path / "token").write_text(content)
    with pytest.raises(CredentialError, match="expected the bare token on one line") as error:
        read_token(tmp_path / "token")
    assert TOKEN not in str(error.value)


@pytest.mark.parametrize(
    ("content", "header"),
    [
        (f"{COOKIE}\n", COOKIE),
        ("oauth2_proxy_kubeflow=c2Vzc2lvbg==|1700000000|c2ln\n", "oauth2_proxy_kubeflow=c2Vzc2lvbg==|1700000000|c2ln"),
        (f"{COOKIE}; other=1", f"{COOKIE}; other=1"),
        (f"{COOKIE}\nother=1\n", f"{COOKIE}; other=1"),
    ],
)  # fmt: skip
def test_the_cookie_file_becomes_one_cookie_header(tmp_path, content, header) -> None:
    (tmp_path / "cookie").write_text(content)
    assert read_cookie(tmp_path / "cookie") == header


@pytest.mark.parametrize("content", ["MTcwMDAwMDAwMHxEdi1CQkFF", "Cookie: a=MTcwMDAw", "a=b c"])
def test_a_cookie_file_without_name_value_pairs_is_refused_without_echoing_it(
    tmp_path, content
) -> None:
    (tmp_path / "cookie").write_text(content)
    with pytest.raises(CredentialError, match="expected NAME=VALUE") as error:
        read_cookie(tmp_path / "cookie")
    assert "MTcwMDAw" not in str(error.value)


def test_secrets_stay_out_of_repr_and_are_redacted() -> None:
    credentials = KfpCredentials("cookie", "--cookie-file c", cookie=f"{COOKIE}; b=x2")
    value = COOKIE.partition("=")[2]
    assert value not in repr(credentials)
    assert credentials.redact(f"got {value} and x2") == "got <redacted> and <redacted>"
