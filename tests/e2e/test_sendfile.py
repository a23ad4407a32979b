"""
Downloads sent with sendfile (plain binary RETR of a local file): byte-exact
from any offset, and ABOR or a vanishing client mid-file leave the session
(and the server) healthy.
"""

from __future__ import annotations

import hashlib
import os
import socket

from conftest import Area, FTPServer, parse_229


def _retr_socket(server: FTPServer, area: Area, name: str, rest: int = 0) -> tuple[socket.socket, object]:
    control = server.control()
    control.login()
    assert control.cmd("TYPE I").code == 200
    port = parse_229(control.cmd("EPSV").text)
    data = socket.create_connection((server.host, port), timeout=15)
    if rest:
        assert control.cmd(f"REST {rest}").code == 350
    control.send(f"RETR {area.path}/{name}")
    assert control.reply().code == 150
    return data, control


def test_sendfile_download_from_offsets(server: FTPServer, area: Area) -> None:
    payload = os.urandom(20 * 1024 * 1024 + 7)
    area.file("big.bin", payload)
    for rest in (0, 1, 5 * 1024 * 1024 + 3, len(payload)):
        data, control = _retr_socket(server, area, "big.bin", rest)
        digest = hashlib.sha256()
        while chunk := data.recv(1 << 20):
            digest.update(chunk)
        data.close()
        assert control.reply().code == 226  # type: ignore[attr-defined]
        assert digest.digest() == hashlib.sha256(payload[rest:]).digest(), rest
        control.close()  # type: ignore[attr-defined]


def test_abor_during_sendfile(server: FTPServer, area: Area) -> None:
    area.file("huge.bin", os.urandom(64 * 1024 * 1024))
    data, control = _retr_socket(server, area, "huge.bin")
    data.recv(65536)  # the transfer is running; the client now stops reading
    control.send(b"\xff\xf4\xffABOR")  # type: ignore[attr-defined]
    codes = [control.reply().code, control.reply().code]  # type: ignore[attr-defined]
    assert codes in ([426, 226], [226, 226]), codes
    data.close()
    assert control.cmd("NOOP").code == 200  # type: ignore[attr-defined]
    control.close()  # type: ignore[attr-defined]


def test_client_resets_during_sendfile(server: FTPServer, area: Area) -> None:
    area.file("reset.bin", os.urandom(64 * 1024 * 1024))
    data, control = _retr_socket(server, area, "reset.bin")
    data.recv(65536)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    data.close()  # RST
    assert control.reply().code == 426  # type: ignore[attr-defined]
    assert control.cmd("NOOP").code == 200  # type: ignore[attr-defined]
    control.close()  # type: ignore[attr-defined]
