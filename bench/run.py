#!/usr/bin/env python3
"""
Benchmark exftp against pyftpdlib and vsftpd on loopback (issue 8).

    python3 bench/run.py            # the full run (1 GiB files, 200 clients, ...)
    python3 bench/run.py --quick    # smaller sizes, two rounds: a few minutes

Starts every server itself on 127.0.0.1, serving the same directory to the
same user, runs each scenario against each for several rounds and writes
a JSON file and a Markdown table of medians (min-max) and exftp/peer ratios
to bench/results/. It installs nothing: a peer that is missing is skipped
with a note (see bench/README.md for the one install line).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _profile, _scenarios
from bench._servers import LIMITS, Exftp, Pyftpdlib, ServerError, Vsftpd

ALL_SERVERS = ["exftp", "pyftpdlib", "vsftpd"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 5, or 2 with --quick)")
    parser.add_argument(
        "--servers", default=",".join(ALL_SERVERS), help="comma-separated subset of " + ",".join(ALL_SERVERS)
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(_scenarios.SCENARIOS),
        help="comma-separated subset of " + ",".join(_scenarios.SCENARIOS),
    )
    parser.add_argument(
        "--s3-rounds", type=int, help="rounds of the S3 scenario (default: --rounds; moto makes each take minutes)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"), help="results directory")
    parser.add_argument("--workdir", type=Path, help="where the served tree goes (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the served tree and the server logs")
    parser.add_argument("--time-limit", type=float, default=1080.0, help="seconds after which no new round starts")
    parser.add_argument(
        "--exftp-tree", type=Path, help="run exftp from this source tree instead of this checkout (before/after)"
    )
    parser.add_argument("--exftp-backlog", type=int, help="listen backlog for exftp's port (default: exftp's, 1024)")
    parser.add_argument(
        "--profile", action="store_true", help="record a py-spy profile of exftp in each scenario (needs py-spy)"
    )
    return parser.parse_args(argv)


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if done.returncode == 0 and text else "?"


def _environment() -> dict[str, Any]:
    try:
        import pyftpdlib

        pyftpdlib_version = pyftpdlib.__ver__
    except ImportError:
        pyftpdlib_version = None
    commit = _version(["git", "-C", str(Exftp.tree), "rev-parse", "--short", "HEAD"])
    status = ["git", "-C", str(Exftp.tree), "status", "--porcelain", "--untracked-files=no"]
    dirty = commit != "?" and _version(status) != "?"
    if commit == "?":
        commit = f"{Exftp.tree} (not a git checkout)"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "exftp_commit": commit + ("+local changes" if dirty else ""),
        "exftp_tree": str(Exftp.tree),
        "exftp_backlog": Exftp.backlog,
        "pyftpdlib": pyftpdlib_version,
        "vsftpd": _version(["dpkg-query", "-W", "-f", "${Version}", "vsftpd"]),
        "curl": _version(["curl", "--version"]),
    }


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    median, low, high = _scenarios.summary(values)
    return f"{_number(median)} ({_number(low)}-{_number(high)})"


def _number(value: float) -> str:
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(metric: _scenarios.Metric, peer: str) -> str:
    mine, theirs = metric.samples.get("exftp"), metric.samples.get(peer)
    if not mine or not theirs:
        return "-"
    denominator = _scenarios.summary(theirs)[0]
    if denominator == 0:
        return "-"
    return f"{_scenarios.summary(mine)[0] / denominator:.2f}x"


#: Issue 21's targets: (metric key prefix, peer or reference, comparison, bound, what it says).
#: A peer compares exftp's median to the peer's; C{None} bounds exftp's median itself.
TARGETS: list[tuple[str, str | None, str, float, str]] = [
    ("retr", "pyftpdlib", ">=", 1.2, "RETR 1 GiB, zero-copy client"),
    ("retr", "vsftpd", ">=", 1.0, "RETR 1 GiB, zero-copy client"),
    ("stor_durable", "pyftpdlib", ">=", 1.2, "STOR 1 GiB durable (226 + fsync)"),
    ("stor_durable", "vsftpd", ">=", 1.1, "STOR 1 GiB durable (226 + fsync)"),
    ("clients_wall", "pyftpdlib", "<=", 1.0, "100 clients: wall time"),
    ("clients_failed", None, "<=", 0, "100 clients: sessions refused or failed"),
    ("logins", "pyftpdlib", ">=", 1.1, "logins/s"),
    ("list", "pyftpdlib", "<=", 0.9, "LIST of 10,000"),
    ("idle_rss", "pyftpdlib", "<=", 1.0, "idle memory per session (RSS)"),
    ("start_rss", None, "<=", 40, "RSS at start, default options (MiB)"),
    ("s3_stor", "boto3", ">=", 1.0, "S3 (moto) 1 GiB STOR vs direct boto3 upload"),
    ("s3_retr", "boto3", ">=", 2.0, "S3 (moto) 1 GiB RETR vs direct boto3 download"),
    ("s3_stor_peak", None, "<=", 64, "S3 1 GiB STOR peak RSS above idle (MiB)"),
    ("s3_retr_peak", None, "<=", 64, "S3 1 GiB RETR peak RSS above idle (MiB)"),
]
#: The reference that issue 21 compares each S3 metric with.
_REFERENCE = {"s3_stor": "s3_boto3_up", "s3_retr": "s3_boto3_down"}


def targets(metrics: list[_scenarios.Metric]) -> list[str]:
    """Issue 21's targets as Markdown rows: what was measured and whether it was met."""
    by_key = {m.key: m for m in metrics}
    # S3 metrics carry their size (s3_stor_1024): the largest one stands for the target.
    for m in metrics:
        if m.key.startswith("s3_"):
            by_key[m.key.rsplit("_", 1)[0]] = m
    rows = ["| target | measured | met |", "|---|---|---|"]
    for key, peer, comparison, bound, label in TARGETS:
        metric = by_key.get(key)
        mine = metric.samples.get("exftp") if metric else None
        theirs: list[float] | None = None
        if peer == "boto3":
            reference = by_key.get(_REFERENCE[key])
            theirs = reference.samples.get("boto3") if reference else None
        elif peer is not None:
            theirs = metric.samples.get(peer) if metric else None
        if not mine or (peer is not None and not theirs):
            rows.append(f"| {label} {comparison} {bound:g}{'x ' + peer if peer else ''} | not measured | - |")
            continue
        value = _scenarios.summary(mine)[0]
        if peer is not None and theirs:
            value /= _scenarios.summary(theirs)[0]
        met = value >= bound if comparison == ">=" else value <= bound
        unit = f"x {peer}" if peer else ""
        shown = f"{value:.3f}" if peer else _number(value)
        rows.append(f"| {label} {comparison} {bound:g}{unit} | {shown}{unit} | {'yes' if met else '**no**'} |")
    return rows


def markdown(
    metrics: list[_scenarios.Metric],
    servers: list[str],
    info: dict[str, Any],
    notes: list[str],
    failures: list[str] | None = None,
) -> str:
    peers = [s for s in servers if s != "exftp"]
    # References that are not servers (direct boto3 against moto) get a column of their own.
    columns = servers + sorted({k for m in metrics for k in m.samples if k not in servers})
    head = ["scenario", "unit", "better", *columns, *(f"exftp/{p}" for p in peers)]
    lines = [
        f"`{info['command']}`, {info['date']}: {info['cpus']} CPUs, load average before "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_before'])}, after "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_after'])}; exftp {info['exftp_commit']}, "
        f"pyftpdlib {info['pyftpdlib']}, vsftpd {info['vsftpd']}; {info['rounds']} rounds"
        f" ({info['s3_rounds']} for S3)"
        f"{' (--quick sizes)' if info['quick'] else ''}. Cells: median (min-max).",
        "",
        "Limits set alike for every server: " + ", ".join(f"{k} {v}" for k, v in info["limits"].items()) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for metric in metrics:
        if not any(metric.samples.values()):
            continue
        row = [metric.title, metric.unit, "↑" if metric.better == "higher" else "↓"]
        row += [_cell(metric.samples.get(s)) for s in columns]
        row += [_ratio(metric, p) for p in peers]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Issue 21's targets (medians of this run):", "", *targets(metrics)]
    cpu_rows = [m for m in metrics if any(m.cpu.values())]
    if cpu_rows:
        lines += ["", "Server CPU seconds per sample (median; vsftpd includes its session processes):", ""]
        lines += ["| scenario | " + " | ".join(servers) + " |", "|" + "---|" * (len(servers) + 1)]
        for metric in cpu_rows:
            cells = [_number(_scenarios.summary(metric.cpu[s])[0]) if metric.cpu.get(s) else "-" for s in servers]
            lines.append(f"| {metric.title} | " + " | ".join(cells) + " |")
    if failures:
        lines += ["", f"**RUN FAILED: {len(failures)} refused or failed sessions or transfers:**", ""]
        lines += [f"- {f}" for f in failures[:20]]
    all_notes = notes + [f"{m.title}: {n}" for m in metrics for n in m.notes]
    if all_notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in all_notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    sizes = _scenarios.QUICK if args.quick else _scenarios.FULL
    rounds = args.rounds or (2 if args.quick else 5)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ALL_SERVERS] + [s for s in scenarios if s not in _scenarios.SCENARIOS]
    if unknown:
        print(f"unknown server or scenario: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.exftp_tree:
        Exftp.tree = args.exftp_tree.resolve()
    Exftp.backlog = args.exftp_backlog
    if not shutil.which("curl"):
        print("curl is needed (apt-get install -y curl)", file=sys.stderr)
        return 2
    notes: list[str] = ["Loopback only; the machine may be shared with other work, so compare ratios within one run."]
    servers: list[str] = []
    for name in wanted:
        why = {"pyftpdlib": Pyftpdlib.available, "vsftpd": Vsftpd.available}.get(name, lambda: None)()
        if why:
            notes.append(f"{name} skipped: {why}")
            print(f"note: {name} skipped: {why}", file=sys.stderr)
        else:
            servers.append(name)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="exftp-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    profile_dir = None
    if args.profile:
        if shutil.which("py-spy"):
            profile_dir = args.out / "profiles"
            profile_dir.mkdir(parents=True, exist_ok=True)
        else:
            notes.append("--profile ignored: py-spy is not installed (python3 -m pip install py-spy)")
    ctx = _scenarios.Context(
        workdir=workdir,
        root=workdir / "root",
        user="exftpbench",
        password=secrets.token_hex(8),
        sizes=sizes,
        rounds=rounds,
        s3_rounds=args.s3_rounds,
        servers=servers,
        deadline=time.monotonic() + args.time_limit,
        profile_dir=profile_dir,
        notes=notes,
    )

    def clean_up() -> None:
        ctx.stop_all()
        if "vsftpd" in servers:
            Vsftpd.cleanup()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(clean_up)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    owner = None
    if "vsftpd" in servers:
        try:
            Vsftpd.make_user(ctx.password, ctx.root)
            owner = Vsftpd.owner()
        except (ServerError, subprocess.CalledProcessError, KeyError) as error:
            notes.append(f"vsftpd skipped: could not make its local user: {error}")
            servers.remove("vsftpd")
    info = _environment()
    info.update(
        rounds=rounds, s3_rounds=args.s3_rounds or rounds, quick=args.quick,
        sizes=vars(sizes) | {"s3_sizes": list(sizes.s3_sizes)}, limits=LIMITS,
        command=" ".join(["python3", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
    )  # fmt: skip
    print(f"preparing {ctx.root} ...", flush=True)
    _scenarios.prepare(ctx, owner)

    metrics: list[_scenarios.Metric] = []
    started = time.monotonic()
    for name in scenarios:
        if ctx.remaining() <= 0:
            notes.append(f"scenario {name} not run: the time limit was reached")
            continue
        print(f"[{time.monotonic() - started:6.0f}s] scenario {name} ...", flush=True)
        results = _scenarios.SCENARIOS[name](ctx)
        metrics.extend(results)
        for metric in results:
            cells = ", ".join(f"{s} {_cell(metric.samples.get(s))}" for s in servers if metric.samples.get(s))
            print(f"         {metric.title} [{metric.unit}]: {cells}", flush=True)
    info["load_average_after"] = os.getloadavg()
    info["seconds"] = round(time.monotonic() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    table = markdown(metrics, servers, info, notes, ctx.failures)
    (args.out / f"bench-{stamp}.md").write_text(table)
    document = {
        "environment": info,
        "servers": servers,
        "notes": notes,
        "failures": ctx.failures,
        "metrics": [
            {
                "key": m.key, "title": m.title, "unit": m.unit, "better": m.better,
                "samples": m.samples, "server_cpu_seconds": m.cpu, "notes": m.notes,
                "median": {s: _scenarios.summary(v)[0] for s, v in m.samples.items() if v},
            }
            for m in metrics
        ],
    }  # fmt: skip
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    if profile_dir is not None:
        for raw in sorted(profile_dir.glob("*.txt")):
            if not raw.name.endswith("-summary.txt"):
                raw.with_name(raw.stem + "-summary.txt").write_text(_profile.summarise(raw))
    print()
    print(table)
    print(f"written: {args.out / f'bench-{stamp}.md'} and .json ({info['seconds']}s)")
    if ctx.failures:
        print(f"FAILED: {len(ctx.failures)} refused or failed sessions or transfers (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
