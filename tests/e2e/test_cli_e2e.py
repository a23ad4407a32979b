"""
The command line as a person meets it: an error names the option and the
accepted form, on standard error, with a pointer to C{--help} (not after the
whole help on standard output); C{--version}; C{--help-auth-type} for
exftp's own authenticators.
"""

from __future__ import annotations

import pytest
from conftest import run_twistd

import exftp


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--idle-timeout", "abc"], "--idle-timeout abc: expected a number, such as 60 or 0.5"),
        (["--max-sessions", "1.5"], "--max-sessions 1.5: expected a whole number, such as 10"),
        (["--auth", "bogus"], "--auth bogus: unknown authenticator 'bogus'; use anonymous, noauth"),
        (["--help-auth-type", "bogus"], "--help-auth-type bogus: unknown authenticator"),
        (["--no-such-option"], "option --no-such-option not recognized"),
    ],
)
def test_errors_name_the_option_on_standard_error(options: list[str], message: str) -> None:
    result = run_twistd("-n", "--pidfile=", "exftp", *options, timeout=30)
    assert result.returncode == 1, result
    assert result.stdout == "", result.stdout  # no 115-line help before the error
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"twistd exftp: error: {message}"), result.stderr
    assert lines[-1] == "Run 'twistd exftp --help' for the options.", result.stderr
    assert "Traceback" not in result.stderr


def test_version_is_exftps() -> None:
    result = run_twistd("exftp", "--version", timeout=30)
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"exftp {exftp.__version__} (Twisted "), result.stdout


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("webhook", ["Usage: --auth webhook:URL", "password_hash", "password_hash_type", "authenticated_url"]),
        ("http-basic", ["Usage: --auth http-basic:URL", "authenticated_ttl_ms"]),
        ("anonymous", ["Usage: --auth anonymous", "read-only"]),
        ("memory", ["Usage: --auth memory", "name:password"]),  # twisted.cred's own, still there
    ],
)
def test_help_auth_type(name: str, expected: list[str]) -> None:
    result = run_twistd("exftp", "--help-auth-type", name, timeout=30)
    assert result.returncode == 0, result
    for text in expected:
        assert text in result.stdout, result.stdout
