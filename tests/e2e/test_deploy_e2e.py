"""
C{deploy/}: the systemd unit (checked by C{systemd-analyze verify}, and its
command run with its configuration file) and the Dockerfile. No Docker
engine is needed: the Dockerfile is checked statically (every path it
copies exists, the extras it installs exist) and the command it runs, with
its environment and the README's C{docker run} options, is started here and
listed with curl. Where a Docker engine runs, the image is also built.
"""

from __future__ import annotations

import configparser
import io
import json
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from _commands import Command, code_blocks, replace_once, with_twistd
from conftest import DEADLINE, PASSWORD, REPO, USER, twistd_command

DEPLOY = REPO / "deploy"


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "exftp.service")
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    text = (DEPLOY / "exftp.service").read_text()
    # verify checks that the program exists: point it at this machine's twistd.
    twistd = shutil.which(twistd_command()[0]) or twistd_command()[0]
    unit = tmp_path / "exftp.service"
    unit.write_text(replace_once(text, {"ExecStart=/opt/exftp/bin/twistd ": f"ExecStart={twistd} "}))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "exftp.service" in line]
    assert result.returncode == 0 and complaints == [], result


def test_systemd_command_serves_with_its_configuration(tmp_path: Path) -> None:
    service = _unit()["Service"]
    assert service["UMask"] == "0022" and service["User"] == "exftp"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/exftp/bin/twistd" and argv[-2:] == ["--config", "/etc/exftp/exftp.toml"]
    (tmp_path / "srv").mkdir()
    (tmp_path / "passwd").write_text(f"{USER}:{PASSWORD}\n")
    config = replace_once((DEPLOY / "exftp.toml").read_text(), {
        '"/srv/ftp"': json.dumps(str(tmp_path / "srv")),
        "file:/etc/exftp/passwd": f"file:{tmp_path / 'passwd'}",
        '"/var/log/exftp/xferlog"': json.dumps(str(tmp_path / "xferlog")),
    })  # fmt: skip
    (tmp_path / "exftp.toml").write_text(config)
    argv = ["twistd", *argv[1:-1], str(tmp_path / "exftp.toml")]
    # FTP_PORT moves it off the fixed port (and onto 127.0.0.1), as the README's environment variables do.
    server = Command(tmp_path / "srv", with_twistd(argv), {"FTP_PORT": "0"}).start()
    try:
        with server.login() as client:
            client.storbinary("STOR a.txt", io.BytesIO(b"a"))
        server.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]  # ExecReload
        with server.login() as client:
            assert client.nlst() == ["a.txt"]
    finally:
        assert server.stop(timeout=30) in (0, -signal.SIGTERM), server.log()
    assert " /a.txt b _ i r alice ftp 0 * c" in (tmp_path / "xferlog").read_text()


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_copies_what_exists_and_installs_known_extras() -> None:
    instructions = _instructions()
    base = next(argument for keyword, argument in instructions if keyword == "FROM")
    found = re.fullmatch(r"python:3\.(\d+)-slim", base)
    assert found and int(found[1]) >= 11, base
    copied = [argument.split()[:-1] for keyword, argument in instructions if keyword == "COPY"]
    assert copied and all((REPO / source).exists() for sources in copied for source in sources), copied
    for sources in copied:
        for source in sources:
            tracked = subprocess.run(["git", "ls-files", source], cwd=REPO, capture_output=True, text=True, check=True)
            assert tracked.stdout.strip(), f"{source} is not in the repository"
    extras = re.findall(r"'\.\[([\w,]+)\]'", " ".join(a for k, a in instructions if k == "RUN"))
    declared = (REPO / "setup.cfg").read_text()
    assert extras and all(f"\n{extra} =\n" in declared for extra in extras[0].split(",")), extras


def test_docker_run_line_of_the_readme_serves(tmp_path: Path) -> None:
    instructions = dict(_instructions())  # the last of each keyword (ENTRYPOINT, CMD, ENV) is the one that counts
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert json.loads(instructions["CMD"]) == []
    env = dict(item.split("=", 1) for item in shlex.split(instructions["ENV"]))
    (block,) = [b for b in code_blocks("### Running it as a service") if b.startswith("docker build")]
    build, run = block.replace("\\\n", " ").splitlines()
    assert shlex.split(build) == ["docker", "build", "-t", "exftp", "-f", "deploy/Dockerfile", "."]
    words = shlex.split(run)
    options = words[words.index("exftp") + 1 :]  # what follows the image name
    assert f"{env['MIN_PASSIVE_PORT']}-{env['MAX_PASSIVE_PORT']}:" in run and f":{env['FTP_PORT']}" in run
    (tmp_path / "shared.txt").write_text("shared\n")
    # The image's command, environment and working directory (the mounted one); only the address and
    # port move to 127.0.0.1 and a free port here.
    server = Command(tmp_path, with_twistd([*entrypoint, *options]), {**env, "FTP_ADDR": "127.0.0.1", "FTP_PORT": "0"})
    server.start()
    try:
        listing = subprocess.run(
            ["curl", "-sS", "--max-time", str(DEADLINE), f"ftp://127.0.0.1:{server.port}/"],
            capture_output=True, text=True, timeout=DEADLINE * 2, check=True,
        ).stdout  # fmt: skip
        assert "shared.txt" in listing, listing
        with server.connect() as client:
            client.login("anonymous", "x")
            reply = client.sendcmd("PASV")  # --passive-address 127.0.0.1, the passive range of the image
            assert re.match(r"227 .*\(127,0,0,1,(\d+),(\d+)\)", reply), reply
            port = int(reply.rsplit(",", 2)[1]) * 256 + int(reply.rsplit(",", 2)[2].rstrip(")."))
            assert int(env["MIN_PASSIVE_PORT"]) <= port <= int(env["MAX_PASSIVE_PORT"]), reply
    finally:
        assert server.stop(timeout=30) in (0, -signal.SIGTERM), server.log()


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False).returncode == 0


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine runs here")
def test_docker_image_builds_and_runs() -> None:
    subprocess.run(["docker", "build", "-t", "exftp-test", "-f", "deploy/Dockerfile", "."], cwd=REPO, check=True,
                   timeout=900)  # fmt: skip
    result = subprocess.run(["docker", "run", "--rm", "exftp-test", "--version"], capture_output=True, text=True,
                            timeout=120, check=True)  # fmt: skip
    assert result.stdout.startswith("exftp "), result
