"""
The public API is exactly what C{__all__} says (as klein's test_exports).
"""

from __future__ import annotations

import importlib
import types

import pytest

import exftp

#: Public packages and modules that may appear as attributes of C{exftp}.
_PUBLIC_MODULES = {"auth", "sftp", "storage", "testing"}


@pytest.mark.parametrize("module_name", ["exftp", "exftp.testing"])
def test_every_exported_name_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module_name", ["exftp", "exftp.testing"])
def test_all_is_sorted_unique_and_public(module_name: str) -> None:
    names = importlib.import_module(module_name).__all__
    assert len(set(names)) == len(names)
    assert list(names) == sorted(names)
    assert [name for name in names if name.startswith("_")] == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from exftp import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(exftp.__all__)


def test_nothing_public_is_left_out_of_all() -> None:
    leaked = {
        name
        for name, value in vars(exftp).items()
        if not name.startswith("_")
        and name not in exftp.__all__
        and not (isinstance(value, types.ModuleType) and name in _PUBLIC_MODULES)
    }
    assert leaked == set()


def test_exports_come_from_private_modules_under_their_own_names() -> None:
    for name in exftp.__all__:
        value = getattr(exftp, name)
        module = getattr(value, "__module__", None)
        assert module is not None and module.startswith("exftp."), (name, module)
        assert any(part.startswith("_") for part in module.split(".")[1:]), (name, module)
        assert getattr(value, "__name__", name) == name


def test_version() -> None:
    assert isinstance(exftp.__version__, str)
    assert all(part.isdigit() for part in exftp.__version__.split(".")[:2])


def test_the_core_api_is_exported() -> None:
    core = {
        "IAuthenticator",
        "IStorage",
        "IStorageFactory",
        "IReadFile",
        "IWriteFile",
        "Session",
        "FileInfo",
        "FileKind",
        "WriteMode",
        "VirtualPath",
        "FTPFactory",
        "FTPError",
        "LoginFailed",
        "FileNotFound",
        "PermissionDenied",
        "MemoryStorage",
        "FileStorage",
        "ReadOnlyStorage",
        "AnonymousAuthenticator",
        "CredentialsCheckerAuthenticator",
        # What an application needs to run what twistd exftp runs (README: Using it from Python).
        "Config",
        "build_service",
        "ServerService",
        "log_observer",
        "FileStorageFactory",
        "Metrics",
    }
    assert core <= set(exftp.__all__)
