"""
Scale-out end to end: Debian's HAProxy with C{send-proxy-v2}, configured by
C{deploy/haproxy.cfg}, in front of two C{twistd exftp} nodes on one moto bucket.

Everything is on loopback, with addresses that keep the roles apart: clients
are 127.0.0.1; HAProxy listens on 127.0.0.2 and connects to the nodes from
127.0.0.2, the nodes' only C{--trusted-proxy}. So the balancer's address is
never the client's. In layout 1 each node announces 127.0.0.1 and passive
ports of its own, and clients connect there directly; in layout 2 HAProxy
also carries the passive ports (C{deploy/haproxy-passive.cfg}) and the nodes
announce the address the client connected to.
"""

from __future__ import annotations

import ftplib
import inspect
import io
import ipaddress
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _moto
import pytest
from _certs import PKIFiles, make_pki
from conftest import (
    _TRACEBACK,
    AUTH,
    DEADLINE,
    PASSWORD,
    REPO,
    USER,
    FTPServer,
    code,
    retr_bytes,
    wait_until,
)

from exftp import FTPFactory
from exftp._proxy import ProxyHeader, encode_v1, encode_v2

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="HAProxy is not installed (apt-get install haproxy)"
)

CLIENT = "127.0.0.1"
BALANCER = "127.0.0.2"
DEPLOY = REPO / "deploy"
MiB = 1024 * 1024
PASSIVE_PORTS = 10
#: Whether the core takes PROXY headers on passive ports and can announce the
#: address the client connected to (layout 2); see the issue 10 report.
LAYOUT_2 = "trusted_proxies" in inspect.signature(FTPFactory).parameters
needs_layout_2 = pytest.mark.xfail(
    not LAYOUT_2, strict=True, reason="the core does not take PROXY headers on passive ports yet"
)


def free_ports(count: int) -> range:
    """C{count} consecutive ports free on both loopback addresses right now."""
    for _ in range(100):
        first = random.randrange(20000, 60000 - count)
        try:
            with ExitStack() as stack:
                for host in (CLIENT, BALANCER):
                    for number in range(first, first + count):
                        probe = stack.enter_context(socket.socket())
                        probe.bind((host, number))
        except OSError:
            continue
        return range(first, first + count)
    raise AssertionError("no free port range")


def free_port() -> int:
    return free_ports(1).start


class Balancer:
    """HAProxy running the files of C{deploy/}, in the foreground."""

    def __init__(self, directory: Path, files: list[str]) -> None:
        self.frontend = (BALANCER, 0)
        self.command = ["haproxy", "-db", *(arg for name in files for arg in ("-f", str(DEPLOY / name)))]
        self.log_path = directory / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> Balancer:
        """Start on a free port (again on another, should someone take it first) with C{env}."""
        for _ in range(3):
            self.frontend = (BALANCER, free_port())
            environment = dict(os.environ, **env, EXFTP_FRONTEND=f"{BALANCER}:{self.frontend[1]}")
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(self.command, env=environment, stdout=log, stderr=subprocess.STDOUT)
            wait_until(self._greets_or_exited, f"HAProxy to forward sessions:\n{self.log()}")
            if self.process.poll() is None:
                return self
        raise AssertionError(f"HAProxy did not start:\n{self.log()}")

    def _greets_or_exited(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            return True
        try:
            with socket.create_connection(self.frontend, timeout=DEADLINE, source_address=(CLIENT, 0)) as probe:
                return probe.recv(3) == b"220"
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(DEADLINE)


class _ProxiedFTP(ftplib.FTP):
    """
    An ftplib client that reaches one node the way the balancer does: from
    the balancer's address, starting with a PROXY v1 header that names the
    client. Its data connections come from the client's address.
    """

    def __init__(self, header: bytes) -> None:
        super().__init__(timeout=DEADLINE, source_address=(CLIENT, 0))
        self.trust_server_pasv_ipv4_address = True
        self._header = header

    def connect(self, host: str = "", port: int = 0, timeout: float = -999, source_address: Any = None) -> str:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), self.timeout, source_address=(BALANCER, 0))
        self.sock.sendall(self._header)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


@dataclass
class Cluster:
    """Two nodes on one bucket behind HAProxy."""

    layout: int
    balancer: Balancer
    nodes: dict[str, FTPServer]
    passive: dict[str, range]
    s3: Any
    bucket: str
    pki: PKIFiles
    clients: list[ftplib.FTP] = field(default_factory=list)

    def login(self, trust_pasv: bool | None = None, tls: bool = False) -> tuple[str, ftplib.FTP]:
        """A client logged in through the balancer, from 127.0.0.1; which node has it ("a" or "b")."""
        client: ftplib.FTP
        if tls:
            context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            client = ftplib.FTP_TLS(context=context, timeout=DEADLINE, source_address=(CLIENT, 0))
        else:
            client = ftplib.FTP(timeout=DEADLINE, source_address=(CLIENT, 0))
        # ftplib ignores a PASV reply's address (it uses the control connection's, the
        # balancer's) unless told to trust it: layout 1 needs it, layout 2 does not.
        client.trust_server_pasv_ipv4_address = self.layout == 1 if trust_pasv is None else trust_pasv
        self.clients.append(client)
        welcome = client.connect(*self.balancer.frontend)
        if tls:
            assert isinstance(client, ftplib.FTP_TLS)
            client.auth()
            client.login(USER, PASSWORD)
            client.prot_p()
        else:
            client.login(USER, PASSWORD)
        found = re.match(r"220 exftp node (\w+) ready\.", welcome)
        assert found, welcome
        return found[1], client

    def on_each_node(self, **options: Any) -> Iterator[tuple[str, ftplib.FTP]]:
        """Sessions through the balancer until each node has had one (the others are closed)."""
        seen: set[str] = set()
        for _ in range(12):
            name, client = self.login(**options)
            if name in seen:
                client.close()
                continue
            seen.add(name)
            yield name, client
            if seen == set(self.nodes):
                return
        raise AssertionError(f"the balancer sent every session to {seen}:\n{self.balancer.log()}")

    def direct(self, name: str, client_host: str = CLIENT) -> ftplib.FTP:
        """A client logged in to one node, through a PROXY header that we send as the balancer would."""
        node = self.nodes[name]
        header = ProxyHeader(1, (ipaddress.ip_address(client_host), 40000), (ipaddress.ip_address(BALANCER), 21))
        client = _ProxiedFTP(encode_v1(header))
        self.clients.append(client)
        client.connect(node.host, node.port)
        client.login(USER, PASSWORD)
        return client

    def objects(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def uploads(self) -> list[str]:
        return [item["Key"] for item in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.balancer.stop()
        for node in self.nodes.values():
            node.stop()


@pytest.fixture(scope="module")
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int], Cluster]]:
    """Start clusters: C{make_cluster(layout)}; all of them stop at the end of the module."""
    clusters: list[Cluster] = []
    pki = make_pki(tmp_path_factory.mktemp("pki"), host=BALANCER)

    def make(layout: int = 1) -> Cluster:
        moto = _moto.shared_server()
        bucket = moto.new_bucket()
        everywhere = free_ports(2 * PASSIVE_PORTS)
        passive = {"a": everywhere[:PASSIVE_PORTS], "b": everywhere[PASSIVE_PORTS:]}
        nodes = {
            name: FTPServer(
                tmp_path_factory.mktemp(f"node-{name}"),
                "--trusted-proxy", BALANCER,
                "--node", name,
                "--storage", f"s3:bucket={bucket}:part_size=5MiB",
                "--auth", AUTH,
                "--passive-address", CLIENT if layout == 1 else "connected",
                "--passive-ports", f"{ports.start}-{ports.stop - 1}",
                "--banner", f"exftp node {name} ready.",
                "--tls-cert", str(pki.server_cert),
                "--tls-key", str(pki.server_key),
                listen=f"haproxy:tcp:0:interface={CLIENT}",
                root_option=False,
            )
            for name, ports in passive.items()
        }  # fmt: skip
        files = ["haproxy.cfg"] + (["haproxy-passive.cfg"] if layout == 2 else [])
        balancer = Balancer(tmp_path_factory.mktemp("haproxy"), files)
        cluster = Cluster(layout, balancer, nodes, passive, moto.s3(), bucket, pki)
        clusters.append(cluster)
        with pytest.MonkeyPatch.context() as patch:
            moto.patch_environment(patch)
            for node in nodes.values():
                node.start()
        env = {"EXFTP_BALANCER_SOURCE": BALANCER}
        for name, ports in passive.items():
            env[f"EXFTP_NODE_{name.upper()}"] = f"{CLIENT}:{nodes[name].port}"
            env[f"EXFTP_NODE_{name.upper()}_HOST"] = CLIENT
            env[f"EXFTP_PASSIVE_{name.upper()}"] = f"{BALANCER}:{ports.start}-{ports.stop - 1}"
        balancer.start(env)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[[int], Cluster]) -> Iterator[Cluster]:
    """The layout 1 cluster most tests share."""
    shared = make_cluster(1)
    yield shared
    for name, node in shared.nodes.items():
        assert node.alive(), f"node {name} died during the tests:\n{node.log()}"


@pytest.fixture
def node_a(cluster: Cluster) -> FTPServer:
    """Node a, so that its log is reported when a test fails (and its tracebacks fail the test)."""
    return cluster.nodes["a"]


@pytest.fixture
def node_b(cluster: Cluster) -> FTPServer:
    """Node b, as L{node_a}."""
    return cluster.nodes["b"]


def _pattern(index: int, size: int) -> bytes:
    return random.Random(index).randbytes(size)


def test_a_file_stored_through_the_balancer_is_the_same_on_every_node(
    cluster: Cluster, node_a: FTPServer, node_b: FTPServer
) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}.bin"
    data = _pattern(1, 700_001)
    _, client = cluster.login()
    client.storbinary(f"STOR {name}", io.BytesIO(data))
    client.quit()
    for node in cluster.nodes:
        direct = cluster.direct(node)
        assert name in direct.nlst()
        assert direct.size(name) == len(data)
        assert retr_bytes(direct, name) == data
        direct.quit()
    for _, client in cluster.on_each_node():
        assert retr_bytes(client, name) == data
        client.quit()


def test_nodes_see_and_log_the_client_not_the_balancer(cluster: Cluster, node_a: FTPServer, node_b: FTPServer) -> None:
    starts = {name: node.log_position() for name, node in cluster.nodes.items()}
    for name, client in cluster.on_each_node():
        status = client.sendcmd("STAT")
        assert f"Connected to {CLIENT}" in status, (name, status)
        client.quit()
    for name, node in cluster.nodes.items():
        node.wait_for_log(rf"Login of 'alice' from {re.escape(CLIENT)}$", start=starts[name])
        assert f"Login of 'alice' from {BALANCER}" not in node.log(starts[name])


def test_port_to_the_balancer_is_a_bounce(cluster: Cluster, node_a: FTPServer, node_b: FTPServer) -> None:
    name = f"active-{uuid.uuid4().hex[:8]}.bin"
    data = _pattern(2, 100_000)
    for _, client in cluster.on_each_node():
        for command in ("PORT 127,0,0,2,200,10", "EPRT |1|127.0.0.2|51210|"):
            with pytest.raises(ftplib.error_perm) as refused:
                client.sendcmd(command)
            assert code(refused.value) == 501 and "client's own address" in str(refused.value), command
        # Active mode to the client itself works: PORT 127,0,0,1,...
        client.set_pasv(False)
        client.storbinary(f"STOR {name}", io.BytesIO(data))
        assert retr_bytes(client, name) == data
        client.quit()


def _dropped(source: str, port: int, data: bytes) -> bool:
    """Whether the node closes a connection from C{source} that sends C{data}, without a byte."""
    with socket.create_connection((CLIENT, port), timeout=DEADLINE, source_address=(source, 0)) as sock:
        sock.sendall(data)
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


def test_connections_without_a_valid_header_are_dropped(cluster: Cluster, node_a: FTPServer) -> None:
    start = node_a.log_position()
    header = encode_v2(ProxyHeader(2, (ipaddress.ip_address(CLIENT), 40000), (ipaddress.ip_address(BALANCER), 21)))
    # Not from the balancer: dropped unread, even with a good header.
    assert _dropped(CLIENT, node_a.port, header + b"USER alice\r\n")
    node_a.wait_for_log(rf"Dropped connection from {re.escape(CLIENT)}: not a trusted proxy", start=start)
    # From the balancer, but not a (valid) header.
    bad = [
        b"USER alice\r\n",
        b"PROXY TCP4 127.0.0.1 127.0.0.2 forty 21\r\n",
        b"PROXY TCP4 127.0.0.1\r\n",
        header[:12] + b"\x31" + header[13:],
        header[:13] + b"\x41" + header[14:],
    ]
    for data in bad:
        assert _dropped(BALANCER, node_a.port, data), data
    node_a.wait_for_log(r"Dropped connection from balancer 127\.0\.0\.2: v2 header with an unknown family", start=start)
    assert "Connection from" not in node_a.log(start).replace(f"Connection from {BALANCER}", "")
    # The node goes on serving.
    assert cluster.direct("a").pwd() == "/"


def test_ftps_through_the_balancer(cluster: Cluster, node_a: FTPServer, node_b: FTPServer) -> None:
    name = f"tls-{uuid.uuid4().hex[:8]}.bin"
    data = _pattern(3, 300_000)
    for _, client in cluster.on_each_node(tls=True):
        assert isinstance(client.sock, ssl.SSLSocket)
        client.storbinary(f"STOR {name}", io.BytesIO(data))
        assert retr_bytes(client, name) == data
        client.quit()


def test_implicit_ftps_reads_the_header_before_tls(start_server: Callable[..., FTPServer], tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = start_server(
        "--trusted-proxy", BALANCER, "--storage", "memory", "--auth", AUTH,
        listen=f"haproxy:ssl:0:interface={CLIENT}:privateKey={pki.server_bundle}",
        root_option=False,
    )  # fmt: skip
    client, balancer = ipaddress.ip_address("198.51.100.7"), ipaddress.ip_address(BALANCER)
    header = encode_v2(ProxyHeader(2, (client, 40000), (balancer, 990)))
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with socket.create_connection((CLIENT, server.port), timeout=DEADLINE, source_address=(BALANCER, 0)) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname=CLIENT) as tls, closing(tls.makefile("rwb")) as stream:
            assert stream.readline().startswith(b"220 ")
            stream.write(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
            stream.flush()
            assert stream.readline().startswith(b"331 ")
            assert stream.readline().startswith(b"230 ")
    server.wait_for_log(r"Login of 'alice' from 198\.51\.100\.7$")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_through_the_balancer_in_layout_1(cluster: Cluster, node_a: FTPServer, node_b: FTPServer) -> None:
    name = f"curl-{uuid.uuid4().hex[:8]}.txt"
    host, port = cluster.balancer.frontend
    url = f"ftp://{USER}:{PASSWORD}@{host}:{port}/{name}"
    # Layout 1 needs clients that use the address of the PASV reply: curl must be told to.
    layout_1 = ["--disable-epsv", "--no-ftp-skip-pasv-ip"]
    upload = subprocess.run(
        ["curl", "-sS", *layout_1, "-T", "-", url], input=b"via curl\n", capture_output=True, timeout=60, check=False
    )
    assert upload.returncode == 0, upload.stderr
    download = subprocess.run(["curl", "-sS", *layout_1, url], capture_output=True, timeout=60, check=False)
    assert download.returncode == 0 and download.stdout == b"via curl\n", download.stderr


def test_when_a_node_dies_sessions_go_to_the_other(make_cluster: Callable[[int], Cluster]) -> None:
    cluster = make_cluster(1)
    completed: dict[str, bytes] = {}
    served: set[str] = set()
    for index in range(12):
        name, client = cluster.login()
        path = f"done-{index}.bin"
        completed[path] = _pattern(10 + index, 200_000 + index)
        client.storbinary(f"STOR {path}", io.BytesIO(completed[path]))
        client.quit()
        served.add(name)
        if served == {"a", "b"}:
            break
    assert served == {"a", "b"}, cluster.balancer.log()

    # An upload in flight: more than one 5 MiB part, so that a multipart upload is open.
    victim, client = cluster.login()
    survivor = ({"a", "b"} - {victim}).pop()
    data = client.transfercmd("STOR inflight.bin")
    data.sendall(_pattern(99, 6 * MiB))
    wait_until(lambda: "inflight.bin" in cluster.uploads(), "the node to start a multipart upload")
    node = cluster.nodes[victim]
    assert node.process is not None
    node.process.kill()
    node.wait_exit()
    data.close()
    client.close()

    for attempt in range(4):
        name, client = cluster.login()
        assert name == survivor, f"session {attempt} went to the dead node:\n{cluster.balancer.log()}"
        listed = set(client.nlst())
        assert set(completed) <= listed and "inflight.bin" not in listed
        if attempt == 0:
            for path, expected in completed.items():
                assert retr_bytes(client, path) == expected, path
        client.quit()
    assert "inflight.bin" not in cluster.objects()
    # A crash leaves the multipart upload open: a bucket lifecycle rule
    # (AbortIncompleteMultipartUpload) cleans it up, as the README says.
    assert cluster.uploads() == ["inflight.bin"]
    assert not _TRACEBACK.search(cluster.nodes[survivor].log()), cluster.nodes[survivor].log()


@needs_layout_2
def test_layout_2_data_connections_through_the_balancer(make_cluster: Callable[[int], Cluster]) -> None:
    cluster = make_cluster(2)
    name = "through.bin"
    data = _pattern(4, 500_000)
    for _, client in cluster.on_each_node(trust_pasv=False):
        reply = client.sendcmd("PASV")
        assert "(127,0,0,2," in reply, reply  # the balancer's address, the one the client connected to
        client.storbinary(f"STOR {name}", io.BytesIO(data))
        assert retr_bytes(client, name) == data
        client.quit()
    for _, client in cluster.on_each_node(tls=True):
        assert retr_bytes(client, name) == data
        client.quit()
    for node in cluster.nodes.values():
        assert "Refused data connection" not in node.log(), node.log()
        assert not _TRACEBACK.search(node.log()), node.log()
    if shutil.which("curl") is not None:
        host, port = cluster.balancer.frontend
        # curl's defaults (EPSV, and the control connection's address for PASV) work in layout 2.
        download = subprocess.run(
            ["curl", "-sS", f"ftp://{USER}:{PASSWORD}@{host}:{port}/through.bin"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert download.returncode == 0 and download.stdout == data, download.stderr


@pytest.mark.parametrize("layout", [1, pytest.param(2, marks=needs_layout_2)])
def test_the_deploy_example_checks_itself(layout: int) -> None:
    ports = free_ports(2 * PASSIVE_PORTS + 1)
    command = [sys.executable, str(DEPLOY / "run.py"), "--check", "--layout", str(layout)]
    command += ["--listen", f"{BALANCER}:{ports[-1]}", "--passive-base", str(ports.start)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check passed" in result.stdout
