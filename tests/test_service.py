"""
L{exftp.Config} and L{exftp.build_service}: the public way to build what
C{twistd exftp} runs, which the twistd plugin itself goes through.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

import exftp
from exftp._cleanup import CleanupService
from exftp._config import FLAG
from exftp._tap import _PLAIN, Options, config_from_options

AUTH = exftp.AnonymousAuthenticator()


def test_config_defaults_are_the_command_lines() -> None:
    options = Options(environ={})
    defaults = {field.name: field.default for field in fields(exftp.Config)}
    for name, setting in _PLAIN.items():
        value = options.defaults[setting.option]
        assert defaults[name] == (bool(value) if setting.kind == FLAG else value), name


def test_options_become_a_config(tmp_path: Path) -> None:
    options = Options(environ={})
    options.parseOptions([
        "--root", str(tmp_path), "--auth", "noauth", "--port", "tcp:0", "--idle-timeout", "30",
        "--passive-ports", "40000-40009", "--allow-foreign-addresses", "--port", "tcp6:0",
        "--hook-events", "upload", "--banner", "hi",
    ])  # fmt: skip
    config = config_from_options(options)
    assert isinstance(config.authenticator, exftp.NoAuthAuthenticator)
    assert isinstance(config.storage_factory, exftp.FileStorageFactory)
    assert config.ports == ("tcp:0", "tcp6:0") and config.idle_timeout == 30.0
    assert config.passive_ports == range(40000, 40010) and config.allow_foreign_addresses is True
    assert config.require_tls is False and config.hook_events == frozenset({exftp.Action.UPLOAD})
    assert config.banner == "hi" and config.data_timeout == 60.0 and config.cleanup_age == 604800


def test_build_service_listens_where_told_and_cleans_up(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    config = exftp.Config(
        authenticator=AUTH,
        storage_factory=exftp.FileStorageFactory(str(tmp_path)),
        ports=["tcp:2121:interface=127.0.0.1", "tcp:2122:backlog=5"],
        xferlog=str(tmp_path / "xferlog"),
        idle_timeout=5,
    )
    server = exftp.build_service(config, reactor=reactor)
    assert isinstance(server, exftp.ServerService) and server.metrics is None
    assert server.factory.idle_timeout == 5 and server.factory.reactor is reactor
    assert any(isinstance(child, exftp.TransferLog) for child in server.factory.observers)
    assert any(isinstance(child, CleanupService) for child in server)
    assert server.reloads  # the transfer log is reopened by reload()
    server.startService()
    assert [(port, backlog, interface) for port, _, backlog, interface in reactor.tcpServers] == [
        (2121, 1024, "127.0.0.1"),
        (2122, 5, ""),
    ]
    server.reload()
    stopped = server.stopService()
    assert stopped is not None
    reactor.advance(1)
    assert (tmp_path / "xferlog").exists()


def test_build_service_with_metrics_serves_them(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    reactor = MemoryReactorClock()
    config = exftp.Config(
        authenticator=AUTH, storage_factory=exftp.MemoryStorageFactory(), ports=["tcp:0"], metrics="tcp:9100"
    )
    server = exftp.build_service(config, reactor=reactor)
    assert isinstance(server.metrics, exftp.Metrics) and server.metrics in server.factory.observers
    server.startService()
    assert [port for port, *_ in reactor.tcpServers] == [0, 9100]


def test_tls_needs_both_files(tmp_path: Path) -> None:
    config = exftp.Config(authenticator=AUTH, storage_factory=exftp.MemoryStorageFactory(), tls_cert="c.pem")
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        exftp.build_service(config, reactor=MemoryReactorClock())
