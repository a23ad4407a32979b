"""
Interop: PyFilesystem2's own filesystem test suite (C{fs.test.FSTestCases},
shipped in the installed C{fs} package) run through C{fs.ftpfs.FTPFS}
against a real C{twistd exftp}, on a directory and on S3 (moto).

Every test gets a fresh directory of its own as the root of the filesystem
under test. What fails, and why, is in L{EXPECTED}.
"""

from __future__ import annotations

import unittest
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _backends import FILE, S3, Backend, Expectations, apply_expectation, bug, start_backend, stop_check
from conftest import PASSWORD, USER, FTPServer

with warnings.catch_warnings():
    # fs declares its namespace through pkg_resources, which warns that it is deprecated.
    warnings.simplefilter("ignore")
    fs_test = pytest.importorskip("fs.test", reason="PyFilesystem2 is not installed (pip install fs)")
    from fs.ftpfs import FTPFS
    from fs.subfs import ClosingSubFS

#: Tests of FSTestCases that fail against exftp, by name: the root cause of each.
EXPECTED: Expectations = {
    "test_open_files": bug(
        "QUIT while a STOR's data connection is open waits behind it (QUIT is not in _IMMEDIATE): FTPFile.seek hangs"
    ),
}


class _ExftpFS(fs_test.FSTestCases):  # type: ignore[misc,name-defined]
    """FSTestCases over FTPFS, rooted in a fresh directory of L{backend}'s server."""

    backend: Backend

    def make_fs(self) -> Any:
        self._directory = self.backend.fresh_directory()
        server = self.backend.server
        ftp_fs = FTPFS(server.host, USER, PASSWORD, port=server.port, timeout=10)
        return ftp_fs.opendir(self._directory, factory=ClosingSubFS)

    def destroy_fs(self, fs: Any) -> None:
        fs.close()
        self.backend.remove(self._directory)


@pytest.fixture(scope="class")
def _backend_of_class(request: pytest.FixtureRequest, start_server: Callable[..., FTPServer]) -> Iterator[None]:
    started = start_backend(request.cls.kind, start_server)
    request.cls.backend = started
    yield
    stop_check(started)


@pytest.fixture(autouse=True)
def _expectation(request: pytest.FixtureRequest, _backend_of_class: None) -> None:
    apply_expectation(request, request.function.__name__, request.cls.kind, EXPECTED)


class TestFTPFSOnFiles(_ExftpFS, unittest.TestCase):
    kind = FILE


class TestFTPFSOnS3(_ExftpFS, unittest.TestCase):
    kind = S3
