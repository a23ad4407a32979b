"""
The servers under test, each started on loopback serving the same directory
to the same user, and stopped (with what they made) at the end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import _procs

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: Seconds a server may take to start or stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
#: The system user made for vsftpd, and the comment that marks it as ours.
VSFTPD_USER = "exftpbench"
_MARKER = "exftp benchmark (temporary)"
#: The same limits for every server: high enough that none refuses a benchmark
#: session (exftp's defaults are 50 sessions and 20 passive ports per address).
#: A session that is refused anyway fails the run.
LIMITS = {"sessions": 1000, "sessions per address": 1000, "passive ports": 1000, "passive ports per address": 1000}


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a process started in a session of its own; SIGKILL its group if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # Only this process's own group: it was started in a new session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


class ServerError(Exception):
    """A server could not be started; the message says why."""


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that cannot listen on port 0)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_for_line(path: Path, pattern: re.Pattern[str], process: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                match = pattern.search(line)
                if match:
                    return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else ""
    raise ServerError(f"no readiness line (exit code {process.poll()}); log ends:\n{tail}")


def _wait_for_banner(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with code {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as probe:
                if probe.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ServerError("no 220 greeting")


class Server:
    """One server process; C{pid} is the process whose memory is measured."""

    name = ""
    #: Whether sessions live in child processes (memory and CPU summed over the tree).
    forks = False
    #: The log line that says the server is ready, with its port (none by default).
    _READY: re.Pattern[str] = re.compile(r"(?!)")

    def __init__(self, workdir: Path, root: Path, user: str, password: str) -> None:
        self.workdir = workdir
        self.root = root
        self.user = user
        self.password = password
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.name}-{os.getpid()}-{time.monotonic_ns()}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Server:
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.process

    def _spawn_until_ready(self, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start C{command} and take the port from its C{_READY} log line; stop it if none comes."""
        process = self._spawn(command, env)
        try:
            self.port = int(_wait_for_line(self.log, self._READY, process)["port"])
        except ServerError:
            self.stop()
            raise

    def stop(self) -> None:
        process, self.process = self.process, None
        _terminate(process)

    def rss_kib(self) -> int:
        return _procs.rss_kib(self.pid, self.forks)

    def uss_kib(self) -> int:
        return _procs.uss_kib(self.pid, self.forks)

    def cpu_seconds(self) -> float:
        return _procs.cpu_seconds(self.pid, self.forks)

    def url(self, path: str = "") -> str:
        return f"ftp://{self.user}:{self.password}@{HOST}:{self.port}/{path}"


def twistd_command() -> list[str]:
    """twistd of this interpreter."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Exftp(Server):
    """C{twistd -n exftp} from this working tree."""

    name = "exftp"
    #: The exftp source tree to run (another checkout, to compare before and after a change).
    tree = REPO
    #: A listen backlog to ask for (C{None}: exftp's default, 1024).
    backlog: int | None = None
    _READY = re.compile(r"exftp listening on (?P<host>\S+):(?P<port>\d+)\s*$")

    def __init__(
        self,
        workdir: Path,
        root: Path,
        user: str,
        password: str,
        storage: str | None = None,
        extra_env: dict[str, str] | None = None,
        defaults: bool = False,
    ) -> None:
        super().__init__(workdir, root, user, password)
        self.storage = storage
        self.extra_env = extra_env or {}
        #: Start with exftp's default limits (to measure its memory at start as shipped).
        self.defaults = defaults

    def start(self) -> Exftp:
        storage = ["--storage", self.storage] if self.storage else ["--root", str(self.root)]
        command = [
            *twistd_command(), "-n", "--pidfile=", "exftp",
            "--port", f"tcp:0:interface={HOST}" + (f":backlog={self.backlog}" if self.backlog else ""),
            *storage,
            "--auth", f"memory:{self.user}:{self.password}",
        ]  # fmt: skip
        if not self.defaults:
            command += [
                "--max-sessions", str(LIMITS["sessions"]),
                "--max-sessions-per-ip", str(LIMITS["sessions per address"]),
                "--max-passive-listeners", str(LIMITS["passive ports"]),
                "--max-passive-listeners-per-ip", str(LIMITS["passive ports per address"]),
            ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.tree), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        self._spawn_until_ready(command, env)
        return self


class Pyftpdlib(Server):
    """pyftpdlib's default asynchronous C{FTPServer} (see C{_pyftpd.py})."""

    name = "pyftpdlib"
    _READY = re.compile(r"pyftpdlib listening on (?P<host>\S+):(?P<port>\d+)")

    @staticmethod
    def available() -> str | None:
        """C{None} when pyftpdlib can be imported, else why not."""
        try:
            import pyftpdlib  # noqa: F401
        except ImportError:
            return "pyftpdlib is not installed (python3 -m pip install pyftpdlib)"
        return None

    def start(self) -> Pyftpdlib:
        script = Path(__file__).with_name("_pyftpd.py")
        limits = [str(LIMITS["sessions"]), str(LIMITS["sessions per address"])]
        command = [sys.executable, str(script), str(self.root), self.user, self.password, str(self.log), *limits]
        self._spawn_until_ready(command)
        return self


_VSFTPD_CONFIG = """\
listen=YES
listen_ipv6=NO
listen_address={host}
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root={root}
chroot_local_user=NO
secure_chroot_dir={empty}
pam_service_name=vsftpd
userlist_enable=NO
tcp_wrappers=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
max_clients={sessions}
max_per_ip={per_address}
use_sendfile=YES
xferlog_enable=NO
syslog_enable=NO
dual_log_enable=NO
vsftpd_log_file={log}
ftpd_banner=vsftpd ready.
idle_session_timeout=600
data_connection_timeout=300
"""


class Vsftpd(Server):
    """
    vsftpd with a local user: a temporary system user whose home is the
    served directory (made only when running as root, removed by L{cleanup}).
    """

    name = "vsftpd"
    forks = True
    BINARY = "/usr/sbin/vsftpd"

    @classmethod
    def available(cls) -> str | None:
        """C{None} when vsftpd can be run here, else why not."""
        if not (Path(cls.BINARY).exists() or shutil.which("vsftpd")):
            return "vsftpd is not installed (apt-get install -y vsftpd)"
        if os.geteuid() != 0:
            return "vsftpd needs root here (it runs each session as a local system user the benchmark creates)"
        return None

    @staticmethod
    def make_user(password: str, home: Path) -> None:
        """Create the temporary local user (or reuse one a crashed run left)."""
        try:
            entry = pwd.getpwnam(VSFTPD_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                 "--comment", _MARKER, VSFTPD_USER],
                check=True, capture_output=True,
            )  # fmt: skip
        else:
            if entry.pw_gecos != _MARKER:
                raise ServerError(f"a user named {VSFTPD_USER} exists and is not the benchmark's; not touching it")
            subprocess.run(["usermod", "--home", str(home), VSFTPD_USER], check=True, capture_output=True)
        # SHA-512 at its fewest rounds: Debian's default (yescrypt) alone costs
        # about 50 ms of CPU per login, which would measure the hash, not vsftpd.
        subprocess.run(
            ["chpasswd", "--crypt-method", "SHA512", "--sha-rounds", "1000"],
            input=f"{VSFTPD_USER}:{password}\n".encode(), check=True, capture_output=True,
        )  # fmt: skip

    @staticmethod
    def owner() -> tuple[int, int]:
        entry = pwd.getpwnam(VSFTPD_USER)
        return entry.pw_uid, entry.pw_gid

    @staticmethod
    def cleanup() -> None:
        """Remove the temporary user, if it is ours."""
        try:
            entry = pwd.getpwnam(VSFTPD_USER)
        except KeyError:
            return
        if entry.pw_gecos == _MARKER:
            subprocess.run(["userdel", VSFTPD_USER], check=False, capture_output=True)

    def start(self) -> Vsftpd:
        empty = self.workdir / "vsftpd-empty"
        empty.mkdir(mode=0o755, exist_ok=True)
        for _attempt in range(5):
            self.port = free_port()
            config = self.workdir / f"vsftpd-{self.port}.conf"
            config.write_text(
                _VSFTPD_CONFIG.format(
                    host=HOST,
                    port=self.port,
                    root=self.root,
                    empty=empty,
                    log=self.workdir / "vsftpd-xfer.log",
                    sessions=LIMITS["sessions"],
                    per_address=LIMITS["sessions per address"],
                )
            )
            config.chmod(0o600)
            process = self._spawn([self.BINARY, str(config)])
            try:
                _wait_for_banner(self.port, process)
            except ServerError:
                self.stop()
                continue
            return self
        raise ServerError(f"vsftpd did not start; log:\n{self.log.read_text(errors='replace')[-2000:]}")


class Moto:
    """moto's S3 server on a loopback port (any credentials are accepted)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            return "moto[server] is not installed (python3 -m pip install 'moto[server]')"
        return None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Moto:
        self.port = free_port()
        with open(self.workdir / "moto.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"moto exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ServerError("moto did not answer")

    def create_bucket(self, name: str) -> None:
        """Create a bucket (moto's server mode does not check signatures by default)."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT", data=b"")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def rss_kib(self) -> int:
        assert self.process is not None
        return _procs.rss_kib(self.process.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        _terminate(process)
