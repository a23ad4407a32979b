"""
The scenarios of issue 8, each run against every server for several rounds.

A scenario returns L{Metric}s: one list of samples per server (and the
server's CPU seconds for each sample), plus notes on anything that failed.
"""

from __future__ import annotations

import ftplib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _clients, _procs
from ._servers import HOST, Exftp, Moto, Pyftpdlib, Server, ServerError, Vsftpd

MB = 1_000_000
MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass
class Sizes:
    big: int
    medium: int
    #: Scenario 3: each client RETRs a file of C{small} bytes C{small_retrs} times.
    small: int
    small_retrs: int
    clients: int
    client_processes: int
    logins: int
    login_workers: int
    idle_sessions: int
    list_entries: int
    early_closes: int
    s3_sizes: tuple[int, ...]
    #: Transfers per server in each round of scenarios 1 and 2: a single 1 GiB
    #: transfer on loopback varies by +-30% from one to the next.
    transfers: int


FULL = Sizes(
    big=1024 * MiB, medium=10 * MiB, small=64 * 1024, small_retrs=10, clients=100, client_processes=4,
    logins=2000, login_workers=20, idle_sessions=500, list_entries=10_000, early_closes=4,
    s3_sizes=(1024 * MiB,), transfers=3,
)  # fmt: skip
QUICK = Sizes(
    big=128 * MiB, medium=1 * MiB, small=64 * 1024, small_retrs=5, clients=50, client_processes=2,
    logins=400, login_workers=20, idle_sessions=100, list_entries=10_000, early_closes=2,
    s3_sizes=(128 * MiB,), transfers=2,
)  # fmt: skip


@dataclass
class Metric:
    key: str
    title: str
    unit: str
    better: str  # "higher" or "lower"
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, server: str, value: float, cpu: float | None = None) -> None:
        self.samples.setdefault(server, []).append(value)
        if cpu is not None:
            self.cpu.setdefault(server, []).append(cpu)


@dataclass
class Context:
    workdir: Path
    root: Path
    user: str
    password: str
    sizes: Sizes
    rounds: int
    servers: list[str]
    deadline: float
    profile_dir: Path | None = None
    #: Rounds of the S3 scenario (C{None}: C{rounds}): boto3's ranged GETs make moto slow.
    s3_rounds: int | None = None
    started: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Sessions that a server refused or that failed: any fails the run.
    failures: list[str] = field(default_factory=list)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def make(self, name: str, **options: Any) -> Server:
        kinds: dict[str, type[Server]] = {"exftp": Exftp, "pyftpdlib": Pyftpdlib, "vsftpd": Vsftpd}
        server = kinds[name](self.workdir, self.root, self.user, self.password, **options)
        self.started.append(server)
        return server.start()

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.started:
            self.started.remove(server)

    def stop_all(self) -> None:
        for server in list(self.started):
            self.stop(server)

    def order(self, round_number: int) -> list[str]:
        """The servers in a different order each round, so that machine noise spreads over all."""
        shift = round_number % len(self.servers)
        return self.servers[shift:] + self.servers[:shift]


@contextmanager
def profiled(ctx: Context, server: Server, label: str) -> Iterator[None]:
    """Record a py-spy profile of an exftp server while the block runs (with --profile)."""
    if ctx.profile_dir is None or server.name != "exftp":
        yield
        return
    output = ctx.profile_dir / f"{label}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(server.pid), "--rate", "200", "--format", "raw",
         "--nonblocking", "--threads", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)


@contextmanager
def running(ctx: Context, label: str, **options: Any) -> Iterator[dict[str, Server]]:
    """Every server started for one scenario, all stopped at its end."""
    started: dict[str, Server] = {}
    try:
        for name in ctx.servers:
            try:
                started[name] = ctx.make(name, **options)
            except ServerError as error:
                ctx.notes.append(f"{label}: {name} did not start: {error}")
        if "exftp" in started and ctx.profile_dir is not None:
            with profiled(ctx, started["exftp"], label):
                yield started
        else:
            yield started
    finally:
        for server in started.values():
            ctx.stop(server)


def _measured(server: Server, action: Callable[[], Any]) -> tuple[Any, float]:
    """Run C{action}; return its result and the server's CPU seconds meanwhile."""
    before = server.cpu_seconds()
    result = action()
    return result, server.cpu_seconds() - before


def _out_of_time(ctx: Context, metric: Metric) -> bool:
    if ctx.remaining() > 0:
        return False
    metric.notes.append("stopped early: the run's time limit was reached")
    return True


def _each_round(ctx: Context, metric: Metric, servers: dict[str, Server]) -> Iterator[tuple[int, str, Server]]:
    """Each round until the run's time limit (noted on C{metric}), each started server in that round's order."""
    for round_number in range(ctx.rounds):
        if _out_of_time(ctx, metric):
            return
        for name in ctx.order(round_number):
            if name in servers:
                yield round_number, name, servers[name]


def _each_transfer(ctx: Context, metric: Metric, servers: dict[str, Server]) -> Iterator[tuple[int, str, Server]]:
    """L{_each_round}, with C{ctx.sizes.transfers} transfers in a row by each server."""
    for round_number, name, server in _each_round(ctx, metric, servers):
        for _ in range(ctx.sizes.transfers):
            yield round_number, name, server


def _zero_copy(
    ctx: Context, server: Server, action: Callable[[ftplib.FTP], _clients.Transfer]
) -> tuple[_clients.Transfer | str, float]:
    """Log in, run one zero-copy transfer (the server's CPU counted for it alone), log out."""
    try:
        ftp = _clients.session(HOST, server.port, ctx.user, ctx.password)
    except (OSError, EOFError, ftplib.Error) as error:
        return f"login: {type(error).__name__}: {error}", 0.0
    try:
        return _measured(server, lambda: action(ftp))
    except (OSError, EOFError, ftplib.Error) as error:
        return f"{type(error).__name__}: {error}", 0.0
    finally:
        _clients.close_session(ftp)


def _throughput(key: str, prefix: str, client: str) -> tuple[Metric, Metric]:
    """A MB/s metric and its server-CPU-per-GiB companion."""
    title = f"{prefix}, {client}"
    return (
        Metric(key, title, "MB/s", "higher"),
        Metric(key + "_cpu", title + " - server CPU per GiB", "s/GiB", "lower"),
    )


def _add_throughput(metrics: tuple[Metric, Metric], name: str, size: int, seconds: float, cpu: float) -> None:
    rate, cpu_per_gib = metrics
    rate.add(name, size / MB / seconds, cpu)
    cpu_per_gib.add(name, cpu * GiB / size)


def retr(ctx: Context) -> list[Metric]:
    size = ctx.sizes.big
    prefix = f"1. RETR {size // MiB} MiB"
    zero = _throughput("retr", prefix, "zero-copy client (MSG_TRUNC)")
    curl = _throughput("retr_curl", prefix, "curl")
    with running(ctx, "retr") as servers:
        for _round_number, name, server in _each_transfer(ctx, zero[0], servers):
            result, cpu = _zero_copy(ctx, server, lambda ftp: _clients.zero_copy_retr(ftp, "big.bin"))
            if isinstance(result, str) or result.size != size:
                zero[0].notes.append(f"{name}: RETR failed ({result if isinstance(result, str) else result.size})")
                ctx.failures.append(f"{prefix} {name}: {result}")
            else:
                _add_throughput(zero, name, size, result.seconds, cpu)
            timeout = max(60.0, size / (20 * MB))
            arguments = ["-o", "/dev/null", server.url("big.bin")]
            done, cpu = _measured(server, lambda a=arguments, t=timeout: _clients.curl(a, t))
            if done.error or done.downloaded != size:
                curl[0].notes.append(f"{name}: RETR failed ({done.error or f'{done.downloaded} bytes'})")
                continue
            _add_throughput(curl, name, size, done.transfer_seconds, cpu)
    return [*zero, *curl]


def _durable(path: Path) -> float:
    """Seconds to fsync C{path}: what a server that answered before its data was on disk still owes."""
    started = time.monotonic()
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return time.monotonic() - started


def stor(ctx: Context) -> list[Metric]:
    size = ctx.sizes.big
    prefix = f"2. STOR {size // MiB} MiB"
    zero = _throughput("stor", prefix, "zero-copy client (sendfile), to the 226")
    durable = Metric(
        "stor_durable", f"{prefix}, zero-copy client, durable: to the 226 + fsync by the bench", "MB/s", "higher"
    )
    curl = _throughput("stor_curl", prefix, "curl, to the 226")
    source = ctx.root / "big.bin"
    with running(ctx, "stor") as servers:
        for round_number, name, server in _each_transfer(ctx, zero[0], servers):
            target = ctx.root / "upload" / f"stor-{name}-{round_number}.bin"
            os.sync()  # start each upload with no write-back pending from the one before
            result, cpu = _zero_copy(
                ctx, server, lambda ftp, t=target.name: _clients.zero_copy_stor(ftp, str(source), f"upload/{t}")
            )
            stored = target.stat().st_size if target.exists() else -1
            if isinstance(result, str) or result.size != size or stored != size:
                zero[0].notes.append(f"{name}: STOR failed ({result if isinstance(result, str) else stored})")
                ctx.failures.append(f"{prefix} {name}: {result}")
            else:
                _add_throughput(zero, name, size, result.seconds, cpu)
                durable.add(name, size / MB / (result.seconds + _durable(target)))
            target.unlink(missing_ok=True)
            os.sync()
            timeout = max(60.0, size / (10 * MB))
            url = server.url(f"upload/{target.name}")
            done, cpu = _measured(server, lambda u=url, t=timeout: _clients.curl(["-T", str(source), u], t))
            stored = target.stat().st_size if target.exists() else -1
            target.unlink(missing_ok=True)
            if done.error or done.uploaded != size or stored != size:
                curl[0].notes.append(f"{name}: STOR failed ({done.error or f'stored {stored} bytes'})")
                continue
            _add_throughput(curl, name, size, done.transfer_seconds, cpu)
    return [*zero, durable, *curl]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (all sockets)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True)).get("ListenOverflows", 0))
    return 0


def many_clients(ctx: Context) -> list[Metric]:
    sizes = ctx.sizes
    label = f"3. {sizes.clients} clients: login, LIST, {sizes.small_retrs} RETRs of {sizes.small // 1024} KiB, QUIT"
    wall = Metric("clients_wall", label + " - wall time", "s", "lower")
    p50 = Metric("clients_p50", label + " - RETR latency p50", "ms", "lower")
    p99 = Metric("clients_p99", label + " - RETR latency p99", "ms", "lower")
    failed = Metric("clients_failed", label + " - sessions refused or failed", "sessions", "lower")
    with running(ctx, "clients") as servers:
        for round_number, name, server in _each_round(ctx, wall, servers):
            arguments = (HOST, server.port, ctx.user, ctx.password, "small.bin", sizes.small_retrs)
            overflows = _listen_overflows()
            (seconds, outputs), cpu = _measured(
                server,
                lambda a=arguments: _clients.run_concurrent(
                    "small", sizes.clients, sizes.client_processes, a, timeout=600
                ),
            )
            overflows = _listen_overflows() - overflows
            if overflows:
                wall.notes.append(
                    f"{name} round {round_number + 1}: {overflows} connection attempts dropped by a full "
                    "listen queue (the client's SYN is sent again after 1 s)"
                )
            expected = sizes.small * sizes.small_retrs
            good = [o for o in outputs if o["ok"] and o["bytes"] == expected]
            bad = sizes.clients - len(good)
            failed.add(name, bad)
            if bad:
                errors = sorted({o.get("error", "short transfer") for o in outputs if o not in good})
                refusals = sum(bool(o.get("refused")) for o in outputs)
                message = (
                    f"{name} round {round_number + 1}: {bad}/{sizes.clients} sessions failed "
                    f"({refusals} refused) {errors[:3]}"
                )
                wall.notes.append(message)
                ctx.failures.append(f"{label}: {message}")
                continue  # a round with refused sessions is a failure, not a speed
            retries = sum(o.get("retries", 0) for o in outputs)
            if retries:
                wall.notes.append(
                    f"{name} round {round_number + 1}: {retries} connections got no greeting within "
                    f"{_clients.GREETING_TIMEOUT:.0f}s and were made again (listen queue overflow)"
                )
            latencies = [latency for o in good for latency in o["latencies"]]
            wall.add(name, seconds, cpu)
            p50.add(name, 1000 * _percentile(latencies, 0.5))
            p99.add(name, 1000 * _percentile(latencies, 0.99))
    return [wall, p50, p99, failed]


def logins(ctx: Context) -> list[Metric]:
    sizes = ctx.sizes
    metric = Metric(
        "logins", f"4. {sizes.logins} logins, {sizes.login_workers} concurrent workers", "logins/s", "higher"
    )
    per_worker = sizes.logins // sizes.login_workers
    with running(ctx, "logins") as servers:
        for round_number, name, server in _each_round(ctx, metric, servers):
            arguments = (HOST, server.port, ctx.user, ctx.password, per_worker)
            (seconds, outputs), cpu = _measured(
                server,
                lambda a=arguments: _clients.run_concurrent(
                    "login", sizes.login_workers, sizes.client_processes, a, timeout=600
                ),
            )
            ok = sum(o["ok"] for o in outputs)
            retries = sum(o.get("retries", 0) for o in outputs)
            if retries:
                metric.notes.append(f"{name} round {round_number + 1}: {retries} connections made again (no greeting)")
            failed = sum(o["failed"] for o in outputs)
            if failed or ok != per_worker * sizes.login_workers:
                errors = sorted({e for o in outputs for e in o["errors"]})
                message = f"{name} round {round_number + 1}: {ok} logins, {failed} failed {errors[:3]}"
                metric.notes.append(message)
                ctx.failures.append(f"{metric.title}: {message}")
                continue
            metric.add(name, ok / seconds, cpu)
    return [metric]


def _warm_up(server: Server, ctx: Context) -> None:
    """One login, LIST and RETR, so that lazily loaded code is in memory before a baseline."""
    _clients._transfer_client(HOST, server.port, ctx.user, ctx.password, "med.bin")


def idle_memory(ctx: Context) -> list[Metric]:
    count = ctx.sizes.idle_sessions
    rss = Metric("idle_rss", f"5. {count} idle logged-in sessions - RSS per session", "KiB", "lower")
    uss = Metric("idle_uss", f"5. {count} idle logged-in sessions - USS (private memory) per session", "KiB", "lower")
    base = Metric("idle_base", "5. idle server before the sessions - RSS", "MiB", "lower")
    for round_number in range(ctx.rounds):
        if _out_of_time(ctx, rss):
            break
        for name in ctx.order(round_number):
            try:
                server = ctx.make(name)
            except ServerError as error:
                rss.notes.append(f"{name} did not start: {error}")
                continue
            try:
                _warm_up(server, ctx)
                time.sleep(0.5)
                base_rss, base_uss = server.rss_kib(), server.uss_kib()
                sessions = _clients.IdleSessions(HOST, server.port, ctx.user, ctx.password)
                try:
                    sessions.open(count)
                    time.sleep(1.0)
                    opened = len(sessions.sessions)
                    if sessions.retries[0]:
                        rss.notes.append(f"{name}: {sessions.retries[0]} connections made again (no greeting)")
                    if opened != count:
                        message = f"{name}: only {opened}/{count} sessions ({sessions.errors[:2]})"
                        rss.notes.append(message)
                        ctx.failures.append(f"{rss.title}: {message}")
                    if opened:
                        rss.add(name, (server.rss_kib() - base_rss) / opened)
                        uss.add(name, (server.uss_kib() - base_uss) / opened)
                        base.add(name, base_rss / 1024)
                finally:
                    sessions.close()
            finally:
                ctx.stop(server)
    return [rss, uss, base]


def listing(ctx: Context) -> list[Metric]:
    entries = ctx.sizes.list_entries
    metric = Metric("list", f"6. LIST of a directory of {entries:,} files", "s", "lower")
    with running(ctx, "list") as servers:
        for _round_number, name, server in _each_round(ctx, metric, servers):
            for _repeat in range(3):
                try:
                    (seconds, lines), cpu = _measured(
                        server,
                        lambda s=server: _clients.timed_listing(HOST, s.port, ctx.user, ctx.password, "many"),
                    )
                except (OSError, EOFError, ftplib.Error) as error:
                    metric.notes.append(f"{name}: LIST failed: {error}")
                    break
                if lines != entries:
                    metric.notes.append(f"{name}: LIST gave {lines} lines, not {entries}")
                    break
                metric.add(name, seconds, cpu)
    return [metric]


def early_close(ctx: Context) -> list[Metric]:
    metric = Metric("early_close", "7. data connection closed early during RETR - time to the reply", "ms", "lower")
    counts: dict[str, list[int]] = {}
    with running(ctx, "early_close") as servers:
        for _round_number, name, server in _each_round(ctx, metric, servers):
            tally = counts.setdefault(name, [0, 0])
            for attempt in range(ctx.sizes.early_closes):
                result = _clients.early_close(
                    HOST, server.port, ctx.user, ctx.password, "big.bin", "med.bin", ctx.sizes.medium,
                    reset=attempt % 2 == 1,
                )  # fmt: skip
                tally[1] += 1
                if result["ok"]:
                    tally[0] += 1
                    metric.add(name, 1000 * result["reply_seconds"])
                else:
                    metric.notes.append(f"{name}: session broken after an early close: {result}")
            # The server itself must still accept new sessions.
            alive = _clients._transfer_client(HOST, server.port, ctx.user, ctx.password, "med.bin")
            if not alive["ok"]:
                metric.notes.append(f"{name}: no new session after early closes: {alive['error']}")
    for name, (good, total) in counts.items():
        metric.notes.append(f"{name}: carried on after {good}/{total} early closes (FIN and RST alternately)")
    return [metric]


def fairness(ctx: Context) -> list[Metric]:
    """NOOP round trips of a second session while a zero-copy client RETRs the big file (report only)."""
    label = f"9. NOOP of another session during a {ctx.sizes.big // MiB} MiB RETR"
    p50 = Metric("fair_p50", label + " - p50", "ms", "lower")
    p99 = Metric("fair_p99", label + " - p99", "ms", "lower")
    worst = Metric("fair_max", label + " - max", "ms", "lower")
    with running(ctx, "fairness") as servers:
        for round_number, name, server in _each_round(ctx, p50, servers):
            try:
                other = _clients.session(HOST, server.port, ctx.user, ctx.password)
            except (OSError, EOFError, ftplib.Error) as error:
                ctx.failures.append(f"{label} {name}: login: {error}")
                continue
            try:
                with _clients.NoopProbe(other) as probe:
                    time.sleep(0.2)  # a few NOOPs before, as a baseline
                    result, _cpu = _zero_copy(ctx, server, lambda ftp: _clients.zero_copy_retr(ftp, "big.bin"))
                    if isinstance(result, str):
                        ctx.failures.append(f"{label} {name}: RETR: {result}")
            finally:
                _clients.close_session(other)
            if probe.errors or not probe.latencies:
                ctx.failures.append(f"{label} {name}: NOOP failed: {probe.errors[:1]}")
                continue
            latencies = probe.latencies
            p50.add(name, 1000 * _percentile(latencies, 0.5))
            p99.add(name, 1000 * _percentile(latencies, 0.99))
            worst.add(name, 1000 * max(latencies))
            if round_number == 0:
                p50.notes.append(f"{name}: {len(latencies)} NOOPs in the first round")
    return [p50, p99, worst]


#: Imports Twisted's reactor, then what C{twistd exftp} imports to build its
#: service with the default options; prints VmRSS (KiB) after each step.
_IMPORTS = """
import sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
from twisted.internet import reactor
before = rss()
from exftp._tap import Options, makeService
options = Options()
options.parseOptions(["--root", sys.argv[1]])
makeService(options)
print(before, rss())
"""


def _import_cost(ctx: Context) -> tuple[float, int, float, list[tuple[str, float]]] | str:
    """
    What exftp's imports add on top of Twisted's reactor (C{python -X
    importtime}): milliseconds, modules, MiB of RSS, and the packages that
    cost most (ms of their modules' own time).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Exftp.tree), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _IMPORTS, str(ctx.root)],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=ctx.workdir,
    )  # fmt: skip
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr[-500:]}"
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    rows: list[tuple[int, str]] = []
    for line in lines:
        self_us, _cumulative, name = line[len("import time:") :].split("|")
        if self_us.strip().isdigit():
            rows.append((int(self_us), name.rstrip()))
    reactor_at = max(i for i, (_us, name) in enumerate(rows) if name == " twisted.internet.reactor")
    after = rows[reactor_at + 1 :]
    by_package: dict[str, float] = {}
    for us, name in after:
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + us / 1000
    before, rss = (int(x) for x in done.stdout.split())
    top = sorted(by_package.items(), key=lambda item: -item[1])[:6]
    return sum(us for us, _name in after) / 1000, len(after), (rss - before) / 1024, top


def start(ctx: Context) -> list[Metric]:
    """RSS of each server right after it starts with its default options; exftp's import cost (report only)."""
    rss = Metric("start_rss", "10. RSS at start, default options (exftp: only --port, --root, --auth)", "MiB", "lower")
    import_ms = Metric("import_ms", "10. exftp's imports on top of Twisted's reactor - time", "ms", "lower")
    import_rss = Metric("import_rss", "10. exftp's imports on top of Twisted's reactor - RSS", "MiB", "lower")
    modules = Metric("import_modules", "10. exftp's imports on top of Twisted's reactor - modules", "modules", "lower")
    for round_number in range(ctx.rounds):
        if _out_of_time(ctx, rss):
            break
        for name in ctx.order(round_number):
            try:
                server = ctx.make(name, defaults=True) if name == "exftp" else ctx.make(name)
            except ServerError as error:
                rss.notes.append(f"{name} did not start: {error}")
                continue
            try:
                time.sleep(0.5)
                rss.add(name, server.rss_kib() / 1024)
            finally:
                ctx.stop(server)
        if "exftp" in ctx.servers:
            cost = _import_cost(ctx)
            if isinstance(cost, str):
                import_ms.notes.append(f"python -X importtime failed: {cost}")
                continue
            milliseconds, count, grown, top = cost
            import_ms.add("exftp", milliseconds)
            modules.add("exftp", count)
            import_rss.add("exftp", grown)
            if round_number == 0:
                import_ms.notes.append(
                    "own time by package (first round): " + ", ".join(f"{p} {ms:.1f} ms" for p, ms in top)
                )
    return [rss, import_ms, import_rss, modules]


def s3(ctx: Context) -> list[Metric]:
    """STOR and RETR through exftp's S3 storage on moto: throughput and peak RSS above idle."""
    metrics: list[Metric] = []
    if "exftp" not in ctx.servers:
        return metrics
    why = Moto.available()
    if why:
        ctx.notes.append(f"8. S3 skipped: {why}")
        return metrics
    moto = Moto(ctx.workdir)
    try:
        moto.start()
        moto.create_bucket("bench")
    except (ServerError, OSError) as error:
        moto.stop()
        ctx.notes.append(f"8. S3 skipped: moto did not start: {error}")
        return metrics
    env = {
        "AWS_ENDPOINT_URL_S3": moto.endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    by_size: dict[int, list[Metric]] = {}
    for size in ctx.sizes.s3_sizes:
        label = f"8. S3 (moto) {size // MiB} MiB"
        by_size[size] = [
            Metric(f"s3_stor_{size // MiB}", f"{label} STOR, zero-copy client", "MB/s", "higher"),
            Metric(f"s3_retr_{size // MiB}", f"{label} RETR, zero-copy client", "MB/s", "higher"),
            Metric(f"s3_stor_peak_{size // MiB}", f"{label} STOR - peak RSS above idle", "MiB", "lower"),
            Metric(f"s3_retr_peak_{size // MiB}", f"{label} RETR - peak RSS above idle", "MiB", "lower"),
            Metric(f"s3_boto3_up_{size // MiB}", f"{label} direct boto3 upload_fileobj (reference)", "MB/s", "higher"),
            Metric(
                f"s3_boto3_down_{size // MiB}", f"{label} direct boto3 download_fileobj (reference)", "MB/s", "higher"
            ),
        ]
        metrics.extend(by_size[size])
    source = ctx.workdir / "s3-source.bin"
    try:
        for round_number in range(ctx.s3_rounds or ctx.rounds):
            if _out_of_time(ctx, metrics[0]):
                break
            for size in ctx.sizes.s3_sizes:
                _make_file(source, size)
                _s3_direct(moto.endpoint, env, source, size, *by_size[size][4:])
                try:
                    server = ctx.make("exftp", storage="s3:bucket=bench", extra_env=env)
                except ServerError as error:
                    ctx.notes.append(f"8. S3 skipped: exftp with --storage s3 did not start: {error}")
                    return []
                try:
                    with profiled(ctx, server, f"s3-{size // MiB}-{round_number}"):
                        ok = _s3_round(ctx, server, source, size, *by_size[size][:4])
                finally:
                    ctx.stop(server)
                if not ok:
                    return metrics
    finally:
        source.unlink(missing_ok=True)
        moto.stop()
    for stor_mbps, retr_mbps, _stor_peak, _retr_peak, up, down in by_size.values():
        for mine, direct in ((stor_mbps, up), (retr_mbps, down)):
            if mine.samples.get("exftp") and direct.samples.get("boto3"):
                ratio = summary(mine.samples["exftp"])[0] / summary(direct.samples["boto3"])[0]
                mine.notes.append(f"exftp / direct boto3 (medians): {ratio:.2f}x")
    return metrics


def _s3_direct(endpoint: str, env: dict[str, str], source: Path, size: int, up: Metric, down: Metric) -> None:
    """
    The reference: the same file uploaded and downloaded with boto3's
    C{upload_fileobj}/C{download_fileobj} (default transfer configuration)
    straight to moto, in this process: what a user gets without exftp.
    """
    try:
        import boto3
    except ImportError:
        up.notes.append("no reference: boto3 is not installed (python3 -m pip install boto3)")
        return
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    try:
        with open(source, "rb") as file:
            started = time.monotonic()
            client.upload_fileobj(file, "bench", "direct.bin")
            up.add("boto3", size / MB / (time.monotonic() - started))
        with open(os.devnull, "wb") as sink:
            started = time.monotonic()
            client.download_fileobj("bench", "direct.bin", sink)
            down.add("boto3", size / MB / (time.monotonic() - started))
        client.delete_object(Bucket="bench", Key="direct.bin")
    except Exception as error:  # a reference that fails is a note, not a crash
        up.notes.append(f"direct boto3 failed: {type(error).__name__}: {error}")
    finally:
        client.close()


def _s3_round(
    ctx: Context, server: Server, source: Path, size: int, stor_mbps: Metric, retr_mbps: Metric,
    stor_peak: Metric, retr_peak: Metric,
) -> bool:  # fmt: skip
    time.sleep(0.5)
    idle = server.rss_kib()  # both peaks above the fresh server's: the STOR's heap is not the RETR's baseline
    for kind, rate, peak_metric in (("STOR", stor_mbps, stor_peak), ("RETR", retr_mbps, retr_peak)):
        _procs.reset_peak(server.pid)
        with _procs.PeakSampler(server.pid, False) as sampler:
            if kind == "STOR":
                result, cpu = _zero_copy(ctx, server, lambda ftp: _clients.zero_copy_stor(ftp, str(source), "s3.bin"))
            else:
                result, cpu = _zero_copy(ctx, server, lambda ftp: _clients.zero_copy_retr(ftp, "s3.bin"))
        peak = max(sampler.peak, _procs.hwm_kib(server.pid))
        if isinstance(result, str) or result.size != size:
            rate.notes.append(f"exftp S3 {kind} failed: {result}; see the server log")
            ctx.notes.append(f"S3 {kind} failed, log tail: {server.log.read_text(errors='replace')[-1500:]}")
            ctx.failures.append(f"8. S3 {kind}: {result}")
            return False
        rate.add("exftp", size / MB / result.seconds, cpu)
        peak_metric.add("exftp", (peak - idle) / 1024)
        time.sleep(0.5)
    return True


def _make_file(path: Path, size: int) -> None:
    """A file of C{size} bytes of incompressible data (one random MiB repeated)."""
    if path.exists() and path.stat().st_size == size:
        return
    block = os.urandom(MiB)
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = block[: min(MiB, size - written)]
            out.write(piece)
            written += len(piece)


def prepare(ctx: Context, owner: tuple[int, int] | None) -> None:
    """The served tree: big.bin, med.bin, many/ (empty files), upload/ (writable by the served user)."""
    ctx.root.mkdir(mode=0o755, parents=True, exist_ok=True)
    _make_file(ctx.root / "big.bin", ctx.sizes.big)
    _make_file(ctx.root / "med.bin", ctx.sizes.medium)
    _make_file(ctx.root / "small.bin", ctx.sizes.small)
    many = ctx.root / "many"
    many.mkdir(mode=0o755, exist_ok=True)
    for index in range(ctx.sizes.list_entries):
        (many / f"file-{index:05d}.dat").touch()
    upload = ctx.root / "upload"
    upload.mkdir(mode=0o755, exist_ok=True)
    if owner is not None:
        os.chown(upload, *owner)
    for path in (ctx.workdir, ctx.root, *(ctx.root / f"{name}.bin" for name in ("big", "med", "small"))):
        path.chmod(0o755 if path.is_dir() else 0o644)


SCENARIOS: dict[str, Callable[[Context], list[Metric]]] = {
    "retr": retr,
    "stor": stor,
    "clients": many_clients,
    "logins": logins,
    "idle": idle_memory,
    "list": listing,
    "early_close": early_close,
    "fairness": fairness,
    "start": start,
    # Last: moto makes it the slowest, and the run's time limit stops rounds, not scenarios.
    "s3": s3,
}


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)
