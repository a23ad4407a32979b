"""
Third-party authenticators and storages as Twisted plugins, using the
example package of the README (its code blocks, written to a temporary
directory): discovery, C{--auth NAME:ARG} / C{--storage NAME:ARG}, the help
listings, and the example classes themselves on a real session.
"""

from __future__ import annotations

import importlib
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_metrics import ControlSession
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from zope.interface.verify import verifyObject

import twisted.plugins
from exftp import (
    AuthenticatorPlugin,
    FTPFactory,
    IAuthenticator,
    IAuthenticatorPlugin,
    IStorageFactory,
    IStoragePlugin,
)
from exftp._plugins import authenticator_plugins, storage_plugins
from exftp._tap import Options, make_authenticator, make_storage_factory

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```(?P<language>\w*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
_FILE = re.compile(r"\A# file: (?P<path>\S+)\n")


def readme_blocks(language: str, section: str | None = None) -> list[str]:
    """The README's code blocks in C{language}, within the C{## section} if given."""
    text = README.read_text()
    if section is not None:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else len(text)]
    return [m["code"] for m in _BLOCK.finditer(text) if m["language"] == language]


def write_readme_package(directory: Path) -> list[str]:
    """Write the README's C{# file: PATH} Python blocks under C{directory}; their paths."""
    written = []
    for code in readme_blocks("python"):
        found = _FILE.match(code)
        if found:
            target = directory / found["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
            written.append(found["path"])
    return written


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The README's example package, importable, and its plugin dropin found by twisted.plugins."""
    written = write_readme_package(tmp_path)
    assert set(written) == {"myftp/__init__.py", "twisted/plugins/myftp_plugins.py"}
    monkeypatch.syspath_prepend(str(tmp_path))
    dropins = str(tmp_path / "twisted" / "plugins")
    monkeypatch.setattr(twisted.plugins, "__path__", [*twisted.plugins.__path__, dropins])
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith(("myftp", "other_plugins", "twisted.plugins.myftp"))]:
        del sys.modules[name]


def test_plugins_are_found(installed: Path) -> None:
    storages = storage_plugins()
    authenticators = authenticator_plugins()
    assert "dropbox" in storages and "tokens" in authenticators
    verifyObject(IStoragePlugin, storages["dropbox"])
    verifyObject(IAuthenticatorPlugin, authenticators["tokens"])
    assert "upload-only" in storages["dropbox"].description


def test_another_package_can_be_searched(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (installed / "other_plugins").mkdir()
    (installed / "other_plugins" / "__init__.py").write_text("")
    package = importlib.import_module("other_plugins")
    assert storage_plugins(package) == {} and authenticator_plugins(package) == {}
    (installed / "other_plugins" / "more.py").write_text(
        "from exftp import MemoryStorageFactory, StoragePlugin\n"
        "memory2 = StoragePlugin('memory2', 'another memory', lambda argument: MemoryStorageFactory())\n"
    )
    assert list(storage_plugins(package)) == ["memory2"]


def test_command_line_falls_back_to_plugins(installed: Path) -> None:
    tokens = installed / "tokens"
    tokens.write_text("alice s3cret\n")
    (installed / "boxes" / "alice").mkdir(parents=True)
    options = Options(environ={})
    options.parseOptions(["--auth", f"tokens:{tokens}", "--storage", f"dropbox:{installed / 'boxes'}"])
    verifyObject(IAuthenticator, options["authenticator"])
    verifyObject(IStorageFactory, options["storage_factory"])
    assert type(options["authenticator"]).__name__ == "TokenAuthenticator"
    assert type(options["storage_factory"]).__name__ == "DropBoxStorageFactory"


def test_plugin_errors_are_usage_errors(installed: Path) -> None:
    with pytest.raises(usage.UsageError, match=r"--storage dropbox: .*/nonexistent is not a directory"):
        make_storage_factory(f"dropbox:{installed}/nonexistent")
    with pytest.raises(usage.UsageError, match=r"--auth tokens: .*No such file"):
        make_authenticator(f"tokens:{installed}/nonexistent")
    with pytest.raises(usage.UsageError, match="--storage nothing-like-it"):
        make_storage_factory("nothing-like-it:x")
    with pytest.raises(usage.UsageError, match="--auth nothing-like-it"):
        make_authenticator("nothing-like-it:x")


def test_a_plugin_that_builds_the_wrong_thing(installed: Path) -> None:
    (installed / "twisted" / "plugins" / "exftp_broken.py").write_text(
        "from exftp import StoragePlugin, NoAuthAuthenticator\n"
        "broken = StoragePlugin('broken', 'builds an authenticator', lambda argument: NoAuthAuthenticator())\n"
    )
    with pytest.raises(usage.UsageError, match="does not provide IStorageFactory"):
        make_storage_factory("broken")


def test_help_lists_plugins(installed: Path) -> None:
    for option, expected in [
        ("--help-storage", ["file:DIR", "memory", "s3:bucket=NAME", "dropbox:ARGUMENT", "upload-only"]),
        ("--help-auth", ["anonymous", "webhook:URL", "tokens:ARGUMENT", "token logins", "memory", "unix"]),
    ]:
        options = Options(environ={})
        options.authOutput = io.StringIO()
        with pytest.raises(SystemExit) as exited:
            options.parseOptions([option])
        assert exited.value.code == 0
        text = options.authOutput.getvalue()
        for word in expected:
            assert word in text, (option, word, text)


def test_plugin_objects() -> None:
    built: list[str] = []
    def build(argument: str) -> IAuthenticator:
        built.append(argument)
        return make_authenticator("noauth")

    plugin = AuthenticatorPlugin("x", "an example", build)
    verifyObject(IAuthenticatorPlugin, plugin)
    plugin.build("argument")
    assert built == ["argument"]


# The README's example classes on a session (the end-to-end test runs them under twistd)


def test_readme_example_classes(installed: Path) -> None:
    import myftp  # type: ignore[import-not-found]

    tokens = installed / "tokens"
    tokens.write_text("alice s3cret\nbob other\n")
    (installed / "boxes" / "alice").mkdir(parents=True)
    (installed / "boxes" / "alice" / "old.txt").write_text("kept")
    auth = myftp.TokenAuthenticator(str(tokens))
    verifyObject(IAuthenticator, auth)
    reactor = MemoryReactorClock()
    factory = FTPFactory(auth, myftp.DropBoxStorageFactory(str(installed / "boxes")), reactor=reactor,
                         login_failure_delay=0)  # fmt: skip
    session = ControlSession(factory)
    session.send("USER alice")
    assert session.send("PASS wrong").startswith("530")
    session.send("USER alice")
    assert session.send("PASS s3cret").startswith("230")
    assert session.send("MKD /new").startswith("257")
    assert session.send("SIZE /old.txt").startswith("213 4")
    assert session.send("DELE /old.txt").startswith("550")
    assert session.send("RNFR /old.txt").startswith("350")
    assert session.send("RNTO /other.txt").startswith("550")
    assert (installed / "boxes" / "alice" / "new").is_dir()
    other = ControlSession(factory)
    other.send("USER bob")
    assert other.send("PASS other").startswith("530")  # bob has no box: his root does not exist
