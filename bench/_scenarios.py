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


@dataclass
class Sizes:
    big: int
    medium: int
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
    big=1024 * MiB, medium=10 * MiB, clients=200, client_processes=4, logins=2000, login_workers=20,
    idle_sessions=500, list_entries=10_000, early_closes=4, s3_sizes=(256 * MiB, 1024 * MiB),
    transfers=3,
)  # fmt: skip
QUICK = Sizes(
    big=128 * MiB, medium=1 * MiB, clients=50, client_processes=2, logins=400, login_workers=20,
    idle_sessions=100, list_entries=10_000, early_closes=2, s3_sizes=(32 * MiB, 128 * MiB),
    transfers=2,
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
    started: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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


def retr(ctx: Context) -> list[Metric]:
    size = ctx.sizes.big
    metric = Metric("retr", f"1. RETR {size // MiB} MiB, one curl client", "MB/s", "higher")
    with running(ctx, "retr") as servers:
        for _round_number, name, server in _each_transfer(ctx, metric, servers):
            timeout = max(60.0, size / (20 * MB))
            arguments = ["-o", "/dev/null", server.url("big.bin")]
            result, cpu = _measured(server, lambda a=arguments, t=timeout: _clients.curl(a, t))
            if result.error or result.downloaded != size:
                metric.notes.append(f"{name}: RETR failed ({result.error or f'{result.downloaded} bytes'})")
                continue
            metric.add(name, size / MB / result.transfer_seconds, cpu)
    return [metric]


def stor(ctx: Context) -> list[Metric]:
    size = ctx.sizes.big
    metric = Metric("stor", f"2. STOR {size // MiB} MiB, one curl client", "MB/s", "higher")
    source = ctx.root / "big.bin"
    with running(ctx, "stor") as servers:
        for round_number, name, server in _each_transfer(ctx, metric, servers):
            target = ctx.root / "upload" / f"stor-{name}-{round_number}.bin"
            os.sync()  # start each upload with no write-back pending from the one before
            timeout = max(60.0, size / (10 * MB))
            url = server.url(f"upload/{target.name}")
            result, cpu = _measured(server, lambda u=url, t=timeout: _clients.curl(["-T", str(source), u], t))
            stored = target.stat().st_size if target.exists() else -1
            target.unlink(missing_ok=True)
            if result.error or result.uploaded != size or stored != size:
                metric.notes.append(f"{name}: STOR failed ({result.error or f'stored {stored} bytes'})")
                continue
            metric.add(name, size / MB / result.transfer_seconds, cpu)
    return [metric]


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


def _in_flight(outputs: list[dict[str, Any]]) -> int:
    """
    How many RETRs ran at the same time, as the median over RETRs of those
    running at each one's midpoint: a server that lets clients reach RETR
    sooner runs more at once, and each takes longer (the same bytes shared).
    """
    spans = [(o["retr_start"], o["retr_start"] + o["retr_seconds"]) for o in outputs]
    counts = [sum(start <= (a + b) / 2 <= end for start, end in spans) for a, b in spans]
    return round(_percentile([float(c) for c in counts], 0.5))


def many_clients(ctx: Context) -> list[Metric]:
    sizes = ctx.sizes
    label = f"3. {sizes.clients} clients: login, LIST, RETR {sizes.medium // MiB} MiB, QUIT"
    wall = Metric("clients_wall", label + " - wall time", "s", "lower")
    p50 = Metric("clients_p50", label + " - RETR latency p50", "s", "lower")
    p99 = Metric("clients_p99", label + " - RETR latency p99", "s", "lower")
    with running(ctx, "clients") as servers:
        for round_number, name, server in _each_round(ctx, wall, servers):
            arguments = (HOST, server.port, ctx.user, ctx.password, "med.bin")
            overflows = _listen_overflows()
            (seconds, outputs), cpu = _measured(
                server,
                lambda a=arguments: _clients.run_concurrent(
                    "transfer", sizes.clients, sizes.client_processes, a, timeout=600
                ),
            )
            overflows = _listen_overflows() - overflows
            if overflows:
                wall.notes.append(
                    f"{name} round {round_number + 1}: {overflows} connection attempts dropped by a full "
                    "listen queue (the client's SYN is sent again after 1 s)"
                )
            good = [o for o in outputs if o["ok"] and o["bytes"] == sizes.medium]
            if len(good) != sizes.clients:
                errors = sorted({o.get("error", "short transfer") for o in outputs if o not in good})
                wall.notes.append(
                    f"{name} round {round_number + 1}: {len(good)}/{sizes.clients} clients succeeded {errors[:3]}"
                )
                if not good:
                    continue
            retries = sum(o.get("retries", 0) for o in outputs)
            if retries:
                wall.notes.append(
                    f"{name} round {round_number + 1}: {retries} connections got no greeting within "
                    f"{_clients.GREETING_TIMEOUT:.0f}s and were made again (listen queue overflow)"
                )
            latencies = [o["retr_seconds"] for o in good]
            p50.notes.append(f"{name} round {round_number + 1}: {_in_flight(good)} RETRs running at once (median)")
            wall.add(name, seconds, cpu)
            p50.add(name, _percentile(latencies, 0.5))
            p99.add(name, _percentile(latencies, 0.99))
    return [wall, p50, p99]


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
                metric.notes.append(f"{name} round {round_number + 1}: {ok} logins, {failed} failed {errors[:3]}")
            if ok:
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
                        rss.notes.append(f"{name}: only {opened}/{count} sessions ({sessions.errors[:2]})")
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
            Metric(f"s3_stor_{size // MiB}", f"{label} STOR", "MB/s", "higher"),
            Metric(f"s3_retr_{size // MiB}", f"{label} RETR", "MB/s", "higher"),
            Metric(f"s3_stor_peak_{size // MiB}", f"{label} STOR - peak RSS above idle", "MiB", "lower"),
            Metric(f"s3_retr_peak_{size // MiB}", f"{label} RETR - peak RSS above idle", "MiB", "lower"),
        ]
        metrics.extend(by_size[size])
    source = ctx.workdir / "s3-source.bin"
    try:
        for round_number in range(ctx.rounds):
            if _out_of_time(ctx, metrics[0]):
                break
            for size in ctx.sizes.s3_sizes:
                stor_mbps, retr_mbps, stor_peak, retr_peak = by_size[size]
                _make_file(source, size)
                try:
                    server = ctx.make("exftp", storage="s3:bucket=bench", extra_env=env)
                except ServerError as error:
                    ctx.notes.append(f"8. S3 skipped: exftp with --storage s3 did not start: {error}")
                    return []
                try:
                    with profiled(ctx, server, f"s3-{size // MiB}-{round_number}"):
                        ok = _s3_round(ctx, server, source, size, stor_mbps, retr_mbps, stor_peak, retr_peak)
                finally:
                    ctx.stop(server)
                if not ok:
                    return metrics
    finally:
        source.unlink(missing_ok=True)
        moto.stop()
    return metrics


def _s3_round(
    ctx: Context, server: Server, source: Path, size: int, stor_mbps: Metric, retr_mbps: Metric,
    stor_peak: Metric, retr_peak: Metric,
) -> bool:  # fmt: skip
    timeout = max(120.0, size / (2 * MB))
    time.sleep(0.5)
    idle = server.rss_kib()
    _procs.reset_peak(server.pid)
    with _procs.PeakSampler(server.pid, False) as sampler:
        result, cpu = _measured(server, lambda: _clients.curl(["-T", str(source), server.url("s3.bin")], timeout))
    peak = max(sampler.peak, _procs.hwm_kib(server.pid))
    if result.error or result.uploaded != size:
        stor_mbps.notes.append(f"exftp S3 STOR failed: {result.error or result.uploaded}; see the server log")
        ctx.notes.append(f"S3 STOR failed, log tail: {server.log.read_text(errors='replace')[-1500:]}")
        return False
    stor_mbps.add("exftp", size / MB / result.transfer_seconds, cpu)
    stor_peak.add("exftp", (peak - idle) / 1024)
    time.sleep(0.5)
    idle = server.rss_kib()
    _procs.reset_peak(server.pid)
    with _procs.PeakSampler(server.pid, False) as sampler:
        result, cpu = _measured(server, lambda: _clients.curl(["-o", "/dev/null", server.url("s3.bin")], timeout))
    peak = max(sampler.peak, _procs.hwm_kib(server.pid))
    if result.error or result.downloaded != size:
        retr_mbps.notes.append(f"exftp S3 RETR failed: {result.error or result.downloaded}")
        return False
    retr_mbps.add("exftp", size / MB / result.transfer_seconds, cpu)
    retr_peak.add("exftp", (peak - idle) / 1024)
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
    many = ctx.root / "many"
    many.mkdir(mode=0o755, exist_ok=True)
    for index in range(ctx.sizes.list_entries):
        (many / f"file-{index:05d}.dat").touch()
    upload = ctx.root / "upload"
    upload.mkdir(mode=0o755, exist_ok=True)
    if owner is not None:
        os.chown(upload, *owner)
    for path in (ctx.workdir, ctx.root, ctx.root / "big.bin", ctx.root / "med.bin"):
        path.chmod(0o755 if path.is_dir() else 0o644)


SCENARIOS: dict[str, Callable[[Context], list[Metric]]] = {
    "retr": retr,
    "stor": stor,
    "clients": many_clients,
    "logins": logins,
    "idle": idle_memory,
    "list": listing,
    "early_close": early_close,
    "s3": s3,
}


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)
