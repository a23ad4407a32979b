"""
The configuration file (TOML), its environment overrides and how the command
line overrides both, through the options object that C{twistd exftp} uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from twisted.python import usage

from exftp import (
    AnonymousAuthenticator,
    FileStorageFactory,
    MemoryStorageFactory,
    S3StorageFactory,
    WebhookAuthenticator,
)
from exftp._config import ENVIRONMENT, config_keys, settings_of
from exftp._tap import _EXTRA_SETTINGS, Options


def parse(
    tmp_path: Path, text: str | None, *arguments: str, environ: Mapping[str, str] | None = None
) -> Options:
    """Options parsed from a configuration file holding C{text} (if any) and a command line."""
    options = Options(environ={} if environ is None else environ)
    config = []
    if text is not None:
        path = tmp_path / "exftp.toml"
        path.write_text(text)
        config = ["--config", str(path)]
    options.parseOptions([*config, *arguments])
    return options


def refused(tmp_path: Path, text: str | None, *arguments: str, environ: Mapping[str, str] | None = None) -> str:
    """The message of the usage error that the file (or command line, or environment) causes."""
    with pytest.raises(usage.UsageError) as caught:
        parse(tmp_path, text, *arguments, environ=environ)
    return str(caught.value)


# A valid file


EX_FTP_STYLE = """
ftp_addr = "127.0.0.1"
ftp_port = 2121
server_name = "Hello from exftp"
min_passive_port = 40000
max_passive_port = 40100
passive_address = "203.0.113.5"
authenticator = "webhook"
storage_connector = "memory"
idle_timeout = 30
max_sessions = 7
require_prot_p = false
allow_foreign_addresses = true
xferlog = "{xferlog}"

[authenticator_config]
login_url = "https://auth.example.com/ftp/login"
login_method = "POST"
authenticated_ttl_ms = 300000
password_hash_type = "sha512"
"""


def test_ex_ftp_names(tmp_path: Path) -> None:
    options = parse(tmp_path, EX_FTP_STYLE.format(xferlog=tmp_path / "xferlog"))
    assert options["ports"] == ["tcp:2121:interface=127.0.0.1"]
    assert options["banner"] == "Hello from exftp"
    assert options["passive_range"] == range(40000, 40101)
    assert options["passive-address"] == "203.0.113.5"
    assert isinstance(options["storage_factory"], MemoryStorageFactory)
    auth = options["authenticator"]
    assert isinstance(auth, WebhookAuthenticator)
    assert auth.login_url == "https://auth.example.com/ftp/login"
    assert auth.login_method == "POST"
    assert auth.authenticated_ttl_ms == 300000
    assert options["idle-timeout"] == 30.0 and isinstance(options["idle-timeout"], float)
    assert options["max-sessions"] == 7
    assert options["allow-foreign-addresses"] and not options["require-prot-p"]
    assert options["xferlog"] == str(tmp_path / "xferlog")


def test_command_line_names(tmp_path: Path) -> None:
    options = parse(
        tmp_path,
        f"""
        port = ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\\\:\\\\:1"]
        banner = "hi"
        passive_ports = "50000-50009"
        root = "{tmp_path}"
        auth = "memory:alice:secret"
        hook = "exftp._hooks.event_document"
        webhook = ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]
        hook_events = "upload,download"
        log_format = "json"
        """,
    )
    assert options["ports"] == ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1"]
    assert options["passive_range"] == range(50000, 50010)
    assert isinstance(options["storage_factory"], FileStorageFactory)
    assert options["hooks"] == ["exftp._hooks.event_document"]
    assert options["webhooks"] == ["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]
    assert {action.value for action in options["hook_actions"]} == {"upload", "download"}
    assert options["log-format"] == "json"


def test_every_option_has_a_key() -> None:
    keys = set(config_keys(settings_of(Options, _EXTRA_SETTINGS)))
    for option in Options(environ={}).longOpt:
        name = option.rstrip("=")
        if not name.startswith("help") and name not in ("version", "config"):
            assert name.replace("-", "_") in keys, name
    assert {"ftp_port", "ftp_addr", "server_name", "min_passive_port", "max_passive_port"} <= keys
    assert {"authenticator", "authenticator_config", "storage_connector", "storage_config"} <= keys


def test_ipv6_ftp_addr(tmp_path: Path) -> None:
    options = parse(tmp_path, 'ftp_addr = "::1"\nftp_port = 0\nstorage = "memory"')
    assert options["ports"] == ["tcp6:0:interface=\\:\\:1"]


def test_storage_config_becomes_s3_options(tmp_path: Path) -> None:
    options = parse(
        tmp_path,
        """
        storage_connector = "s3"
        [storage_config]
        bucket = "uploads"
        prefix = "ftp/"
        endpoint = "http://127.0.0.1:9000"
        addressing = "path"
        parts_in_flight = 2
        """,
    )
    assert options["storage"] == "s3:bucket=uploads:prefix=ftp/:endpoint=http\\://127.0.0.1\\:9000:addressing=path" \
        ":parts_in_flight=2"
    factory = options["storage_factory"]
    assert isinstance(factory, S3StorageFactory)
    assert factory.config.bucket == "uploads"
    assert factory.config.endpoint_url == "http://127.0.0.1:9000"
    assert factory.config.parts_in_flight == 2


# Secrets come from the environment or from files


def test_text_from_the_environment_and_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "users"
    secret_file.write_text("memory:alice:from-a-file\n")
    options = parse(
        tmp_path,
        f"""
        storage = "memory"
        auth = {{ file = "{secret_file}" }}
        webhook = [{{ env = "HOOK_URL" }}]
        """,
        environ={"HOOK_URL": "http://127.0.0.1:1/hook?token=t0ken"},
    )
    assert options["auth"] == "memory:alice:from-a-file"
    assert options["webhooks"] == ["http://127.0.0.1:1/hook?token=t0ken"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('auth = { env = "NOT_SET_ANYWHERE" }', ["auth", "NOT_SET_ANYWHERE", "not set"]),
        ('auth = { file = "/nonexistent/exftp-secret" }', ["auth", "/nonexistent/exftp-secret"]),
        ('auth = { vault = "x" }', ["auth", "env", "file"]),
    ],
)
def test_bad_secret_references(tmp_path: Path, text: str, words: list[str]) -> None:
    message = refused(tmp_path, text)
    for word in words:
        assert word in message


# Mistakes are refused before the server starts, naming the key


def test_unknown_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = refused(tmp_path, "ftp_prot = 21")
    assert "ftp_prot" in message and "unknown key" in message and "ftp_port" in message
    assert str(tmp_path / "exftp.toml") in message


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    assert "logging" in refused(tmp_path, "[logging]\nlevel = 'debug'")


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('ftp_port = "2121"', "ftp_port", "port number"),
        ("ftp_port = 70000", "ftp_port", "port number"),
        ('idle_timeout = "soon"', "idle_timeout", "number"),
        ("max_sessions = 2.5", "max_sessions", "integer"),
        ("max_sessions = -1", "max_sessions", "negative"),
        ("data_timeout = true", "data_timeout", "number"),
        ('require_tls = "yes"', "require_tls", "true or false"),
        ("banner = 220", "banner", "text"),
        ("port = 21", "port", "text"),
        ('authenticator_config = "x"', "auth_option", "table"),
        ("min_passive_port = 40000", "min_passive_port", "max_passive_port"),
        ("min_passive_port = 40010\nmax_passive_port = 40000", "min_passive_port", "above"),
        ("min_passive_port = 0\nmax_passive_port = 10", "min_passive_port", "port number"),
        ('server_name = "a"\nbanner = "b"', "server_name", "same setting"),
        ('ftp_port = 21\nport = ["tcp:21"]', "port", "not both"),
        ('storage_config = { bucket = "b" }', "storage_config", "storage_connector"),
        ('storage_connector = "memory"\nstorage_config = { a = "b" }', "storage_config", "no settings"),
    ],
)
def test_wrong_values_are_named(tmp_path: Path, text: str, key: str, reason: str) -> None:
    message = refused(tmp_path, text)
    assert re.search(rf"\b{key}\b", message), message
    assert reason in message, message


def test_values_are_still_checked_like_the_command_line(tmp_path: Path) -> None:
    assert "bogus:1" in refused(tmp_path, 'port = ["bogus:1"]')
    assert "--passive-address" in refused(tmp_path, 'passive_address = "::1"\nstorage = "memory"')


def test_invalid_toml(tmp_path: Path) -> None:
    message = refused(tmp_path, "ftp_port = ")
    assert "not valid TOML" in message and "exftp.toml" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="nonexistent"):
        Options(environ={}).parseOptions(["--config", str(tmp_path / "nonexistent.toml")])


# The environment overrides the file; the command line overrides both


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {"FTP_PORT": "2222", "FTP_ADDR": "0.0.0.0", "MIN_PASSIVE_PORT": "41000", "MAX_PASSIVE_PORT": "41009"}
    options = parse(
        tmp_path,
        'port = ["tcp:21"]\npassive_ports = "40000-40100"\nstorage = "memory"',
        environ=environ,
    )
    assert options["ports"] == ["tcp:2222:interface=0.0.0.0"]
    assert options["passive_range"] == range(41000, 41010)
    assert set(ENVIRONMENT) == set(environ)


def test_environment_alone(tmp_path: Path) -> None:
    options = parse(tmp_path, None, "--storage", "memory", environ={"FTP_PORT": "0"})
    assert options["ports"] == ["tcp:0:interface=127.0.0.1"]


@pytest.mark.parametrize("variable", sorted(ENVIRONMENT.keys() - {"FTP_ADDR"}))
def test_bad_environment_value_is_named(tmp_path: Path, variable: str) -> None:
    environ = {"MIN_PASSIVE_PORT": "41000", "MAX_PASSIVE_PORT": "41000", variable: "lots"}
    assert variable in refused(tmp_path, 'storage = "memory"', environ=environ)


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    text = EX_FTP_STYLE.format(xferlog=tmp_path / "xferlog")
    options = parse(
        tmp_path,
        text,
        "--port", "tcp:0:interface=127.0.0.1",
        "--banner", "from the command line",
        "--root", str(tmp_path),
        "--auth", "anonymous",
        "--idle-timeout", "5",
        "--passive-ports", "45000-45001",
        environ={"FTP_PORT": "2222"},
    )  # fmt: skip
    assert options["ports"] == ["tcp:0:interface=127.0.0.1"]
    assert options["banner"] == "from the command line"
    assert isinstance(options["storage_factory"], FileStorageFactory)
    assert isinstance(options["authenticator"], AnonymousAuthenticator)
    assert options["idle-timeout"] == 5.0
    assert options["passive_range"] == range(45000, 45002)
    assert options["max-sessions"] == 7  # not given on the command line: the file's


def test_auth_options_merge_with_the_file(tmp_path: Path) -> None:
    text = EX_FTP_STYLE.format(xferlog=tmp_path / "xferlog")
    options = parse(tmp_path, text, "--auth-option", "login_method=PUT", "--auth-option", "timeout=3")
    auth = options["authenticator"]
    assert isinstance(auth, WebhookAuthenticator)
    assert (auth.login_method, auth.timeout, auth.authenticated_ttl_ms) == ("PUT", 3.0, 300000)
    with pytest.raises(usage.UsageError, match="given twice"):
        parse(tmp_path, text, "--auth-option", "timeout=1", "--auth-option", "timeout=2")


def test_abbreviated_config_option(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text('banner = "abbreviated"\nstorage = "memory"')
    options = Options(environ={})
    options.parseOptions(["--conf", str(path)])
    assert options["banner"] == "abbreviated"


def test_readme_example(tmp_path: Path) -> None:
    from test_plugins import readme_blocks

    [text] = readme_blocks("toml", "Operating exftp")
    options = parse(
        tmp_path,
        text,
        "--xferlog", str(tmp_path / "xferlog"),
        environ={"EXFTP_WEBHOOK_URL": "https://hooks.example.com/ftp?token=t"},
    )  # fmt: skip
    assert options["ports"] == ["tcp:2121:interface=0.0.0.0"]
    assert options["passive_range"] == range(40000, 40101)
    assert options["webhooks"] == ["https://hooks.example.com/ftp?token=t"]
    assert isinstance(options["authenticator"], WebhookAuthenticator)
    assert options["authenticator"].authenticated_url == "https://auth.example.com/ftp/check"
    factory = options["storage_factory"]
    assert isinstance(factory, S3StorageFactory)
    assert (factory.config.bucket, factory.config.prefix, factory.config.region) == ("uploads", "ftp/", "eu-west-1")
    assert options["metrics"] == "tcp:9100:interface=127.0.0.1" and options["log-format"] == "json"


@pytest.mark.parametrize(
    ("arguments", "mention"),
    [
        (["--hook-events", "upload,bogus"], "bogus"),
        (["--hook-events", ","], "--hook-events"),
        (["--hook", "exftp.no_such_module.hook"], "exftp.no_such_module.hook"),
        (["--hook", "exftp.__version__"], "not callable"),
        (["--webhook", "ftp://127.0.0.1/hook"], "--webhook"),
        (["--hook-timeout", "0"], "--hook-timeout"),
        (["--hook-queue", "0"], "--hook-queue"),
        (["--hook-retries", "-1"], "--hook-retries"),
        (["--metrics", "bogus:1"], "--metrics bogus:1"),
        (["--log-format", "xml"], "--log-format xml"),
        (["--xferlog", "/nonexistent/exftp/xferlog"], "--xferlog"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_operations_options_are_checked(tmp_path: Path, arguments: list[str], mention: str) -> None:
    assert mention in refused(tmp_path, None, "--storage", "memory", *arguments)
