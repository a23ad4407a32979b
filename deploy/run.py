#!/usr/bin/env python3
"""
Two exftp nodes behind HAProxy on one bucket, on this machine, in one command.

    python3 deploy/run.py              # then: curl -u alice:secret ftp://127.0.0.1:2121/
    python3 deploy/run.py --layout 2   # then: curl -u alice:secret ftp://127.0.0.2:2121/
    python3 deploy/run.py --check      # start, store and read a file through the balancer, stop

It starts an S3 store (moto's server, unless C{--s3-endpoint} names one, such
as MinIO), two C{twistd exftp} nodes that accept the PROXY protocol only from
127.0.0.2, and HAProxy with C{deploy/haproxy.cfg}, which connects to the nodes
from 127.0.0.2. Each node has passive ports of its own. In layout 1 a node
announces its own address (127.0.0.1) and clients connect to it directly; in
layout 2 HAProxy also forwards the passive ports (C{haproxy-passive.cfg}) and
the nodes announce the balancer's address. Everything stops on Ctrl-C.

Needs C{haproxy} (Debian: C{apt-get install haproxy}) and, without
C{--s3-endpoint}, C{python3 -m pip install 'moto[server]'}.
"""

from __future__ import annotations

import argparse
import ftplib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
USER, PASSWORD = "alice", "secret"
#: The balancer's address as the nodes see it: the only one they trust with PROXY headers.
BALANCER_SOURCE = "127.0.0.2"
NODE_HOST = "127.0.0.1"
PASSIVE_PORTS_PER_NODE = 10
DEADLINE = 30.0
_READY = re.compile(r"exftp listening on \S+:(\d+)\s*$")
_MOTO_READY = re.compile(r"Running on (http://\S+)")


def wait_until(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll C{ready} until it is true; fail when C{process} exits or after L{DEADLINE}."""
    deadline = time.monotonic() + DEADLINE
    while not ready():
        if process is not None and process.poll() is not None:
            raise SystemExit(f"run.py: {what} exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"run.py: {what} not ready after {DEADLINE:.0f}s")
        time.sleep(0.05)


class Cluster:
    """The processes of the example, and their logs."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: dict[str, list[str]] = {}
        self._changed = threading.Condition()

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only us, and we stop each process once.
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
        self.processes.append((name, process))
        self.logs[name] = []
        threading.Thread(target=self._read, args=(name, process), daemon=True).start()
        return process

    def _read(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            with self._changed:
                self.logs[name].append(line)
                self._changed.notify_all()
            if self.verbose:
                print(f"[{name}] {line}", flush=True)

    def wait_for_line(self, name: str, pattern: re.Pattern[str], process: subprocess.Popen[bytes]) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            with self._changed:
                found.extend(m for m in map(pattern.search, self.logs[name]) if m)
            return bool(found)

        wait_until(name, seen, process)
        return found[0]

    def stop(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def dump(self) -> None:
        for name, lines in self.logs.items():
            for line in lines:
                print(f"[{name}] {line}", file=sys.stderr)


def twistd() -> list[str]:
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def start_moto(cluster: Cluster) -> str:
    """moto's S3 server on a free loopback port; its endpoint."""
    command = [sys.executable, "-m", "moto.server", "-H", NODE_HOST, "-p", "0"]
    process = cluster.start("s3", command, dict(os.environ))
    return cluster.wait_for_line("s3", _MOTO_READY, process)[1]


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create the bucket on moto (which takes unsigned requests)."""
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10):
        pass


def start_node(
    cluster: Cluster, name: str, passive: range, passive_address: str, s3_env: dict[str, str], bucket: str
) -> int:
    """One exftp node; its control port."""
    command = [
        *twistd(), "-n", "--pidfile=", "exftp",
        "--port", f"haproxy:tcp:0:interface={NODE_HOST}",
        "--trusted-proxy", BALANCER_SOURCE,
        "--node", name,
        "--storage", f"s3:bucket={bucket}:addressing=path",
        "--auth", f"memory:{USER}:{PASSWORD}",
        "--passive-address", passive_address,
        "--passive-ports", f"{passive.start}-{passive.stop - 1}",
        "--banner", f"exftp node {name} ready.",
    ]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, **s3_env, PYTHONPATH=path)
    process = cluster.start(name, command, env)
    return int(cluster.wait_for_line(name, _READY, process)[1])


def start_haproxy(
    cluster: Cluster, frontend: tuple[str, int], nodes: dict[str, int], passive: dict[str, range] | None
) -> None:
    """HAProxy with haproxy.cfg, and with haproxy-passive.cfg for C{passive} ranges (layout 2)."""
    env = dict(
        os.environ,
        EXFTP_FRONTEND=f"{frontend[0]}:{frontend[1]}",
        EXFTP_BALANCER_SOURCE=BALANCER_SOURCE,
        EXFTP_NODE_A=f"{NODE_HOST}:{nodes['a']}",
        EXFTP_NODE_B=f"{NODE_HOST}:{nodes['b']}",
    )
    command = ["haproxy", "-db", "-f", str(HERE / "haproxy.cfg")]
    if passive is not None:
        command += ["-f", str(HERE / "haproxy-passive.cfg")]
        for name, ports in passive.items():
            env[f"EXFTP_PASSIVE_{name.upper()}"] = f"{frontend[0]}:{ports.start}-{ports.stop - 1}"
            env[f"EXFTP_NODE_{name.upper()}_HOST"] = NODE_HOST
    process = cluster.start("haproxy", command, env)

    def greets() -> bool:
        try:
            with socket.create_connection(frontend, timeout=2) as probe:
                return probe.recv(4).startswith(b"220")
        except OSError:
            return False

    wait_until("haproxy", greets, process)


def login(frontend: tuple[str, int], layout: int) -> ftplib.FTP:
    """An ftplib client logged in through the balancer."""
    client = ftplib.FTP()
    # ftplib ignores the address of a PASV reply unless told to trust it: layout 1 needs it.
    client.trust_server_pasv_ipv4_address = layout == 1
    client.connect(*frontend, timeout=DEADLINE)
    client.login(USER, PASSWORD)
    return client


def self_check(frontend: tuple[str, int], layout: int) -> None:
    """Store a file through the balancer, then read it in new sessions until both nodes have served one."""
    data = os.urandom(100_000)
    with login(frontend, layout) as client:
        client.storbinary("STOR check.bin", io.BytesIO(data))
    served = set()
    for _ in range(10):
        with login(frontend, layout) as client:
            welcome = client.welcome
            chunks: list[bytes] = []
            client.retrbinary("RETR check.bin", chunks.append)
            if b"".join(chunks) != data:
                raise SystemExit(f"run.py: check failed: {welcome!r} served different bytes")
            served.add(welcome)
        if len(served) == 2:
            print("check passed: both nodes served the file stored through the balancer", flush=True)
            return
    raise SystemExit(f"run.py: check failed: only {sorted(served)} answered")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--layout", type=int, choices=(1, 2), default=1, help="1: data connections to the nodes; 2: through HAProxy"
    )
    parser.add_argument("--listen", help="the balancer's address (default 127.0.0.1:2121, layout 2: 127.0.0.2:2121)")
    parser.add_argument(
        "--passive-base", type=int, default=30000, help="node a passes ports BASE..BASE+9, node b the next ten"
    )
    parser.add_argument("--s3-endpoint", help="an S3 endpoint to use instead of moto, e.g. http://127.0.0.1:9000")
    parser.add_argument("--bucket", default="exftp", help="the bucket (created on moto; must exist elsewhere)")
    parser.add_argument("--check", action="store_true", help="check the example works, then stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    listen = args.listen or ("127.0.0.1:2121" if args.layout == 1 else "127.0.0.2:2121")
    host, _, port = listen.rpartition(":")
    frontend = (host, int(port))
    if args.layout == 2 and host == NODE_HOST:
        raise SystemExit(f"run.py: in layout 2 the nodes' passive ports are on {NODE_HOST}: listen elsewhere")
    cluster = Cluster(verbose=not args.check)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        if args.s3_endpoint:
            endpoint = args.s3_endpoint
            credentials = {}
        else:
            endpoint = start_moto(cluster)
            create_bucket(endpoint, args.bucket)
            credentials = {"AWS_ACCESS_KEY_ID": "example", "AWS_SECRET_ACCESS_KEY": "example"}
        s3_env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_DEFAULT_REGION": "us-east-1", **credentials}
        base = args.passive_base
        passive = {
            name: range(first, first + PASSIVE_PORTS_PER_NODE)
            for name, first in (("a", base), ("b", base + PASSIVE_PORTS_PER_NODE))
        }
        announce = NODE_HOST if args.layout == 1 else "connected"
        nodes = {
            name: start_node(cluster, name, ports, announce, s3_env, args.bucket) for name, ports in passive.items()
        }
        start_haproxy(cluster, frontend, nodes, passive if args.layout == 2 else None)
        if args.check:
            self_check(frontend, args.layout)
            return
        print(
            f"\nexftp behind HAProxy on ftp://{listen} (user {USER}, password {PASSWORD}); nodes a and b "
            f"on 127.0.0.1:{nodes['a']} and :{nodes['b']} (PROXY protocol only from {BALANCER_SOURCE}).\n"
            f"Try: curl -u {USER}:{PASSWORD} ftp://{listen}/   Stop: Ctrl-C\n",
            flush=True,
        )
        while all(process.poll() is None for _, process in cluster.processes):
            time.sleep(0.5)
        stopped = [name for name, process in cluster.processes if process.poll() is not None]
        raise SystemExit(f"run.py: {', '.join(stopped)} stopped")
    except KeyboardInterrupt:
        pass
    except (SystemExit, OSError, urllib.error.URLError, ftplib.Error):
        if args.check:
            cluster.dump()
        raise
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
