"""
Every command through Python's ftplib against a running server, and the
reply sequencing that clients rely on.
"""

from __future__ import annotations

import ftplib
import io
import os
import socket
from collections.abc import Callable

import pytest
from conftest import (
    USER,
    Area,
    FTPServer,
    code,
    list_lines,
    parse_227,
    parse_229,
    port_argument,
    read_all,
    refused_code,
    retr_bytes,
    retr_raw,
    stor_raw,
)

# Login


def test_greeting_user_pass(server: FTPServer) -> None:
    client = server.connect()
    try:
        assert client.getwelcome().startswith("220")
        assert client.sendcmd(f"USER {USER}").startswith("331 ")
        assert client.sendcmd("PASS secret").startswith("230 ")
    finally:
        client.close()


def test_user_unknown_still_331_then_530(server: FTPServer) -> None:
    client = server.connect()
    try:
        assert client.sendcmd("USER nobody-here").startswith("331 ")
        assert refused_code(client, "PASS secret") == 530
    finally:
        client.close()


def test_wrong_password_530_and_can_retry(server: FTPServer) -> None:
    client = server.connect()
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.login(USER, "wrong")
        assert code(refused.value) == 530
        # Still not logged in.
        assert refused_code(client, "PWD") == 530
        assert client.login(USER, "secret").startswith("230")
        assert client.pwd() == "/"
    finally:
        client.close()


def test_pass_without_user_503(server: FTPServer) -> None:
    client = server.connect()
    try:
        assert refused_code(client, "PASS secret") == 503
    finally:
        client.close()


@pytest.mark.parametrize(
    "line",
    ["PWD", "CWD /", "CDUP", "LIST", "NLST", "RETR x", "STOR x", "APPE x", "PASV", "EPSV", "PORT 127,0,0,1,4,1",
     "TYPE I", "MODE S", "STRU F", "MKD x", "RMD x", "DELE x", "RNFR x", "SIZE x", "MDTM x", "REST 0", "XPWD"],
)  # fmt: skip
def test_commands_before_login_530(server: FTPServer, line: str) -> None:
    with server.control() as control:
        reply = control.cmd(line)
        assert reply.code == 530, reply
        # The session carries on.
        assert control.cmd("NOOP").code == 200


def test_acct_after_login(ftp: ftplib.FTP) -> None:
    reply = ftp.sendcmd("ACCT billing")
    assert reply[:3] in ("202", "230"), reply


def test_quit_221_then_closed(server: FTPServer) -> None:
    with server.control() as control:
        control.login()
        assert control.cmd("QUIT").code == 221
        assert control.at_eof()


def test_quit_before_login(server: FTPServer) -> None:
    with server.control() as control:
        assert control.cmd("QUIT").code == 221
        assert control.at_eof()


# Informational commands


def test_syst(server: FTPServer) -> None:
    client = server.connect()
    try:
        reply = client.sendcmd("SYST")
        assert reply.startswith("215 UNIX")
    finally:
        client.close()


def test_noop(ftp: ftplib.FTP) -> None:
    assert ftp.voidcmd("NOOP").startswith("200")


def test_feat(server: FTPServer) -> None:
    with server.control() as control:
        reply = control.cmd("FEAT")
    assert reply.code == 211
    assert len(reply.lines) > 2
    assert reply.lines[-1].startswith("211 ")
    features = {line.strip() for line in reply.lines[1:-1]}
    for feature in ("EPSV", "EPRT", "PASV", "SIZE", "MDTM", "REST STREAM", "UTF8"):
        assert feature in features, reply
    # Feature lines start with a space (RFC 2389).
    assert all(line.startswith(" ") for line in reply.lines[1:-1]), reply


def test_help(server: FTPServer) -> None:
    with server.control() as control:
        general = control.cmd("HELP")
        assert general.code == 214
        assert "RETR" in general.text and "STOR" in general.text
        assert control.cmd("HELP RETR").code == 214


def test_stat_idle(ftp: ftplib.FTP) -> None:
    reply = ftp.sendcmd("STAT")
    assert reply.startswith("211")
    assert USER in reply


def test_opts_utf8_and_allo(ftp: ftplib.FTP) -> None:
    assert ftp.sendcmd("OPTS UTF8 ON").startswith("200")
    assert refused_code(ftp, "OPTS FROB ON") in (501, 504)
    assert ftp.sendcmd("ALLO 1000")[:3] in ("200", "202")


def test_abor_when_idle(ftp: ftplib.FTP) -> None:
    reply = ftp.sendcmd("ABOR")
    assert reply[:3] in ("225", "226"), reply
    assert ftp.voidcmd("NOOP").startswith("200")


def test_unknown_command_500(ftp: ftplib.FTP) -> None:
    for line in ("XYZZY", "XYZZY now", "FOOBAR x y z"):
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.sendcmd(line)
        assert code(refused.value) in (500, 502), (line, refused.value)
    assert ftp.voidcmd("NOOP").startswith("200")


@pytest.mark.parametrize("line", ["FROBNICATE now", "R3TR x"])
def test_unrecognised_verb_shapes_500(ftp: ftplib.FTP, line: str) -> None:
    # RFC 959: 500 is "Syntax error, command unrecognized"; 501 is for bad parameters.
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(line)
    assert code(refused.value) == 500, refused.value
    assert ftp.voidcmd("NOOP").startswith("200")


@pytest.mark.parametrize("size", [9000, 20000])
def test_overlong_line_refused_and_next_command_served(server: FTPServer, size: int) -> None:
    with server.control(timeout=5) as control:
        # The over-long line and the next command arrive together.
        control.sock.sendall(b"USER " + b"A" * size + b"\r\nNOOP\r\n")
        reply = control.reply()
        assert reply.code == 500, reply
        assert control.reply().code == 200
        assert control.cmd("SYST").code == 215


def test_unknown_command_before_login_500(server: FTPServer) -> None:
    with server.control() as control:
        assert control.cmd("XYZZY").code == 500


@pytest.mark.parametrize(
    "line",
    ["PORT garbage", "PORT 1,2,3", "PORT 127,0,0,1,300,1", "PORT 127,0,0,1,-1,5", "PORT 127,0,0,1,4",
     "EPRT garbage", "EPRT |1|127.0.0.1|", "EPRT |1|127.0.0.1|99999|", "EPRT |1|not-an-ip|4000|", "REST abc",
     "REST -5"],
)  # fmt: skip
def test_bad_arguments_501(ftp: ftplib.FTP, line: str) -> None:
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(line)
    assert code(refused.value) == 501, refused.value
    assert ftp.voidcmd("NOOP").startswith("200")


@pytest.mark.parametrize("line", ["RETR", "STOR", "CWD", "MKD", "DELE", "RNFR", "SIZE", "TYPE"])
def test_missing_argument_501(ftp: ftplib.FTP, line: str) -> None:
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.sendcmd(line)
    assert code(refused.value) == 501, refused.value


# Transfer parameters


def test_type(ftp: ftplib.FTP) -> None:
    for argument in ("A", "I", "A N", "L 8", "a", "i"):
        assert ftp.sendcmd(f"TYPE {argument}").startswith("200"), argument
    assert refused_code(ftp, "TYPE E") == 504
    assert refused_code(ftp, "TYPE Q") in (501, 504)


def test_mode(ftp: ftplib.FTP) -> None:
    assert ftp.sendcmd("MODE S").startswith("200")
    for letter in ("B", "C"):
        assert refused_code(ftp, f"MODE {letter}") == 504
    assert refused_code(ftp, "MODE Q") in (501, 504)


def test_stru(ftp: ftplib.FTP) -> None:
    assert ftp.sendcmd("STRU F").startswith("200")
    for letter in ("R", "P"):
        assert refused_code(ftp, f"STRU {letter}") == 504


def test_ascii_upload_converts_crlf_to_lf(ftp: ftplib.FTP, area: Area) -> None:
    text = b"first line\r\nsecond line\r\n\r\nlast, no newline"
    assert stor_raw(ftp, f"STOR {area.path}/text.txt", text, type_="A").startswith("226")
    assert (area.local / "text.txt").read_bytes() == b"first line\nsecond line\n\nlast, no newline"


def test_ascii_download_converts_lf_to_crlf(ftp: ftplib.FTP, area: Area) -> None:
    area.file("unix.txt", b"one\ntwo\n\nthree\n")
    assert retr_raw(ftp, f"RETR {area.path}/unix.txt", type_="A") == b"one\r\ntwo\r\n\r\nthree\r\n"
    # And TYPE I sends the bytes as stored.
    assert retr_raw(ftp, f"RETR {area.path}/unix.txt", type_="I") == b"one\ntwo\n\nthree\n"


def test_ascii_conversion_across_chunk_boundaries(ftp: ftplib.FTP, area: Area) -> None:
    # Long enough to be split over many reads and writes; CR LF pairs land on every boundary.
    lines = [(b"x" * (n % 97)) for n in range(40000)]
    unix = b"\n".join(lines) + b"\n"
    wire = b"\r\n".join(lines) + b"\r\n"
    assert stor_raw(ftp, f"STOR {area.path}/big.txt", wire, type_="A").startswith("226")
    assert (area.local / "big.txt").read_bytes() == unix
    assert retr_raw(ftp, f"RETR {area.path}/big.txt", type_="A") == wire


def test_binary_keeps_crlf(ftp: ftplib.FTP, area: Area) -> None:
    data = b"a\r\nb\rc\n\r\r\n"
    assert stor_raw(ftp, f"STOR {area.path}/bin", data, type_="I").startswith("226")
    assert (area.local / "bin").read_bytes() == data
    assert retr_raw(ftp, f"RETR {area.path}/bin", type_="I") == data


# Data connection set-up


def test_pasv_reply(ftp: ftplib.FTP) -> None:
    reply = ftp.sendcmd("PASV")
    assert reply.startswith("227 ")
    host, port = parse_227(reply)
    assert host == "127.0.0.1"
    assert 0 < port < 65536


def test_epsv_reply(ftp: ftplib.FTP) -> None:
    reply = ftp.sendcmd("EPSV")
    assert reply.startswith("229 ")
    assert 0 < parse_229(reply) < 65536
    assert ftp.sendcmd("EPSV 1").startswith("229 ")
    assert refused_code(ftp, "EPSV 2") == 522


def _epsv_retr(client: ftplib.FTP, path: str) -> bytes:
    port = parse_229(client.sendcmd("EPSV"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as data:
        reply = client.sendcmd(f"RETR {path}")
        assert reply.startswith("150"), reply
        received = read_all(data)
    assert client.voidresp().startswith("226")
    return received


def test_epsv_all_refuses_pasv_port_eprt(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", b"after EPSV ALL")
    assert ftp.sendcmd("EPSV ALL").startswith("200")
    for line in ("PASV", "PORT 127,0,0,1,200,1", "EPRT |1|127.0.0.1|51201|"):
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.sendcmd(line)
        assert code(refused.value) == 503, (line, refused.value)
    assert _epsv_retr(ftp, f"{area.path}/f") == b"after EPSV ALL"


def _active(client: ftplib.FTP, listener: socket.socket, setup: str, command: str, send: bytes | None = None) -> bytes:
    assert client.sendcmd(setup).startswith("200")
    reply = client.sendcmd(command)
    assert reply.startswith("150"), reply
    data, peer = listener.accept()
    assert peer[0] == "127.0.0.1"
    received = []
    with data:
        if send is not None:
            data.sendall(send)
        else:
            received.append(read_all(data))
    assert client.voidresp().startswith("226")
    return b"".join(received)


def test_port_retr_and_stor(ftp: ftplib.FTP, area: Area, listener: socket.socket) -> None:
    area.file("down", b"active download\n")
    ftp.voidcmd("TYPE I")
    setup = f"PORT {port_argument(*listener.getsockname()[:2])}"
    assert _active(ftp, listener, setup, f"RETR {area.path}/down") == b"active download\n"
    _active(ftp, listener, setup, f"STOR {area.path}/up", send=b"active upload")
    assert (area.local / "up").read_bytes() == b"active upload"


def test_eprt_retr_and_list(ftp: ftplib.FTP, area: Area, listener: socket.socket) -> None:
    area.file("down", b"eprt download")
    ftp.voidcmd("TYPE I")
    setup = f"EPRT |1|127.0.0.1|{listener.getsockname()[1]}|"
    assert _active(ftp, listener, setup, f"RETR {area.path}/down") == b"eprt download"
    listing = _active(ftp, listener, setup, f"NLST {area.path}")
    assert listing.split(b"\r\n")[0].endswith(b"down")


def test_eprt_wrong_family_522(ftp: ftplib.FTP) -> None:
    assert refused_code(ftp, "EPRT |2|::1|50000|") == 522


def test_ftplib_active_mode(ftp: ftplib.FTP, area: Area) -> None:
    ftp.set_pasv(False)
    ftp.storbinary(f"STOR {area.path}/f", io.BytesIO(b"ftplib active"))
    assert retr_bytes(ftp, f"{area.path}/f") == b"ftplib active"
    assert ftp.nlst(area.path) in ([f"{area.path}/f"], ["f"])


# Reply sequencing around transfers


def test_retr_missing_is_550_without_150(ftp: ftplib.FTP, area: Area) -> None:
    ftp.sendcmd("PASV")
    assert refused_code(ftp, f"RETR {area.path}/missing") == 550
    # The session still works, and nothing is queued.
    assert ftp.voidcmd("NOOP").startswith("200")


def test_retr_directory_is_550(ftp: ftplib.FTP, area: Area) -> None:
    ftp.sendcmd("PASV")
    assert refused_code(ftp, f"RETR {area.path}") == 550
    assert ftp.voidcmd("NOOP").startswith("200")


@pytest.mark.parametrize("verb", ["RETR f", "LIST", "NLST", "STOR g"])
def test_transfer_without_pasv_or_port_425(ftp: ftplib.FTP, area: Area, verb: str) -> None:
    area.file("f", b"data")
    ftp.cwd(area.path)
    with pytest.raises(ftplib.error_temp) as refused:
        ftp.sendcmd(verb)
    assert code(refused.value) == 425
    assert ftp.voidcmd("NOOP").startswith("200")
    assert not (area.local / "g").exists()


def test_data_channel_is_single_use(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", b"once")
    assert _epsv_retr(ftp, f"{area.path}/f") == b"once"
    with pytest.raises(ftplib.error_temp) as refused:
        ftp.sendcmd(f"RETR {area.path}/f")
    assert code(refused.value) == 425


# Directories


def test_pwd_cwd_cdup(ftp: ftplib.FTP, area: Area) -> None:
    (area.local / "sub" / "deeper").mkdir(parents=True)
    assert ftp.sendcmd("PWD").startswith('257 "/"')
    assert ftp.cwd(area.path).startswith("250")
    assert ftp.pwd() == area.path
    ftp.cwd("sub/deeper")
    assert ftp.pwd() == f"{area.path}/sub/deeper"
    assert ftp.sendcmd("CDUP").startswith(("200", "250"))
    assert ftp.pwd() == f"{area.path}/sub"
    ftp.cwd("..")
    assert ftp.pwd() == area.path
    ftp.cwd("/")
    assert ftp.pwd() == "/"


def test_cwd_missing_or_file_550(ftp: ftplib.FTP, area: Area) -> None:
    area.file("plain", b"x")
    ftp.cwd(area.path)
    for target in ("missing", "plain"):
        with pytest.raises(ftplib.error_perm) as refused:
            ftp.cwd(target)
        assert code(refused.value) == 550
        assert ftp.pwd() == area.path


def test_x_aliases(ftp: ftplib.FTP, area: Area) -> None:
    assert ftp.sendcmd(f"XCWD {area.path}").startswith("250")
    assert ftp.sendcmd("XPWD").startswith(f'257 "{area.path}"')
    assert ftp.sendcmd("XMKD xdir").startswith(f'257 "{area.path}/xdir"')
    assert (area.local / "xdir").is_dir()
    assert ftp.sendcmd("XCWD xdir").startswith("250")
    assert ftp.sendcmd("XPWD").startswith(f'257 "{area.path}/xdir"')
    assert ftp.sendcmd("XCUP").startswith(("200", "250"))
    assert ftp.sendcmd("XPWD").startswith(f'257 "{area.path}"')
    assert ftp.sendcmd("XRMD xdir").startswith("250")
    assert not (area.local / "xdir").exists()


def test_mkd_rmd(ftp: ftplib.FTP, area: Area) -> None:
    reply = ftp.sendcmd(f"MKD {area.path}/new dir")
    assert reply.startswith(f'257 "{area.path}/new dir"'), reply
    assert (area.local / "new dir").is_dir()
    assert refused_code(ftp, f"MKD {area.path}/new dir") == 550
    assert ftp.sendcmd(f"RMD {area.path}/new dir").startswith("250")
    assert not (area.local / "new dir").exists()
    assert refused_code(ftp, f"RMD {area.path}/new dir") == 550


def test_mkd_quotes_double_quotes(ftp: ftplib.FTP, area: Area) -> None:
    reply = ftp.sendcmd(f'MKD {area.path}/say "hi"')
    assert reply.startswith(f'257 "{area.path}/say ""hi"""'), reply
    assert (area.local / 'say "hi"').is_dir()


def test_rmd_non_empty_550(ftp: ftplib.FTP, area: Area) -> None:
    (area.local / "full").mkdir()
    area.file("full/inside", b"x")
    assert refused_code(ftp, f"RMD {area.path}/full") == 550
    assert (area.local / "full" / "inside").exists()


def test_rmd_of_a_file_550(ftp: ftplib.FTP, area: Area) -> None:
    area.file("plain", b"x")
    assert refused_code(ftp, f"RMD {area.path}/plain") == 550
    assert (area.local / "plain").exists()


def test_rmd_root_refused(ftp: ftplib.FTP) -> None:
    assert refused_code(ftp, "RMD /") == 550


def test_dele(ftp: ftplib.FTP, area: Area) -> None:
    area.file("gone", b"x")
    (area.local / "dir").mkdir()
    assert ftp.sendcmd(f"DELE {area.path}/gone").startswith("250")
    assert not (area.local / "gone").exists()
    for target in ("gone", "dir"):
        assert refused_code(ftp, f"DELE {area.path}/{target}") == 550
    assert (area.local / "dir").is_dir()


# Files


def test_stor_retr_size(ftp: ftplib.FTP, area: Area) -> None:
    ftp.cwd(area.path)
    reply = ftp.storbinary("STOR hello.bin", io.BytesIO(b"hello world"))
    assert reply.startswith("226")
    assert (area.local / "hello.bin").read_bytes() == b"hello world"
    assert retr_bytes(ftp, "hello.bin") == b"hello world"
    assert ftp.sendcmd("SIZE hello.bin") == "213 11"
    assert ftp.size("hello.bin") == 11


def test_stor_replaces(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", b"a much longer old content")
    ftp.storbinary(f"STOR {area.path}/f", io.BytesIO(b"new"))
    assert (area.local / "f").read_bytes() == b"new"


def test_stor_into_missing_directory_550(ftp: ftplib.FTP, area: Area) -> None:
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.storbinary(f"STOR {area.path}/no/such/dir/f", io.BytesIO(b"x"))
    assert code(refused.value) == 550


def test_stor_onto_directory_550(ftp: ftplib.FTP, area: Area) -> None:
    (area.local / "d").mkdir()
    with pytest.raises(ftplib.error_perm) as refused:
        ftp.storbinary(f"STOR {area.path}/d", io.BytesIO(b"x"))
    assert code(refused.value) == 550
    assert (area.local / "d").is_dir()


def test_size_of_directory_and_missing_550(ftp: ftplib.FTP, area: Area) -> None:
    for target in (area.path, f"{area.path}/missing"):
        assert refused_code(ftp, f"SIZE {target}") == 550


def test_mdtm(ftp: ftplib.FTP, area: Area) -> None:
    path = area.file("dated", b"x")
    when = 1577934245  # 2020-01-02 03:04:05 UTC
    os.utime(path, (when, when))
    assert ftp.sendcmd(f"MDTM {area.path}/dated") == "213 20200102030405"
    assert refused_code(ftp, f"MDTM {area.path}/missing") == 550


def test_rest_retr(ftp: ftplib.FTP, area: Area) -> None:
    data = bytes(range(256)) * 40
    area.file("f", data)
    for offset in (0, 1, 1000, len(data) - 1, len(data)):
        chunks: list[bytes] = []
        reply = ftp.retrbinary(f"RETR {area.path}/f", chunks.append, rest=offset)
        assert reply.startswith("226")
        assert b"".join(chunks) == data[offset:], offset
    # REST applies to one transfer only.
    assert retr_bytes(ftp, f"{area.path}/f") == data


def test_rest_reply_350(ftp: ftplib.FTP) -> None:
    assert ftp.sendcmd("REST 100").startswith("350")


def test_rest_stor_resumes(ftp: ftplib.FTP, area: Area) -> None:
    area.file("partial", b"0123456789")
    reply = ftp.storbinary(f"STOR {area.path}/partial", io.BytesIO(b"abc"), rest=4)
    assert reply.startswith("226")
    assert (area.local / "partial").read_bytes() == b"0123abc"


def test_appe(ftp: ftplib.FTP, area: Area) -> None:
    area.file("log", b"one\n")
    ftp.voidcmd("TYPE I")
    assert stor_raw(ftp, f"APPE {area.path}/log", b"two\n").startswith("226")
    assert (area.local / "log").read_bytes() == b"one\ntwo\n"
    assert stor_raw(ftp, f"APPE {area.path}/fresh", b"created").startswith("226")
    assert (area.local / "fresh").read_bytes() == b"created"


def test_rnfr_rnto(ftp: ftplib.FTP, area: Area) -> None:
    area.file("old", b"content")
    (area.local / "dir").mkdir()
    assert ftp.sendcmd(f"RNFR {area.path}/old").startswith("350")
    assert ftp.sendcmd(f"RNTO {area.path}/dir/new").startswith("250")
    assert not (area.local / "old").exists()
    assert (area.local / "dir" / "new").read_bytes() == b"content"
    # ftplib's helper, a directory this time.
    assert ftp.rename(f"{area.path}/dir", f"{area.path}/moved").startswith("250")
    assert (area.local / "moved" / "new").exists()


def test_rnfr_missing_550(ftp: ftplib.FTP, area: Area) -> None:
    assert refused_code(ftp, f"RNFR {area.path}/missing") == 550
    # And the failed RNFR leaves nothing pending.
    assert refused_code(ftp, f"RNTO {area.path}/x") == 503


def test_rnto_without_rnfr_503(ftp: ftplib.FTP, area: Area) -> None:
    assert refused_code(ftp, f"RNTO {area.path}/x") == 503


def test_rnfr_then_other_command_forgets_it(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", b"x")
    assert ftp.sendcmd(f"RNFR {area.path}/f").startswith("350")
    assert ftp.voidcmd("NOOP").startswith("200")
    assert refused_code(ftp, f"RNTO {area.path}/g") == 503
    assert (area.local / "f").exists()


# Anonymous, read-only (the default without --auth)


@pytest.fixture(scope="module")
def anonymous(start_server: Callable[..., FTPServer]) -> FTPServer:
    served = start_server()
    (served.root / "pub").mkdir()
    (served.root / "pub" / "readme.txt").write_bytes(b"public\n")
    return served


@pytest.mark.parametrize("name", ["anonymous", "ftp", "ANONYMOUS"])
def test_anonymous_login_and_read(anonymous: FTPServer, name: str) -> None:
    client = anonymous.login(name, "guest@example.com")
    try:
        assert retr_bytes(client, "/pub/readme.txt") == b"public\n"
        assert any(line.endswith(" readme.txt") for line in list_lines(client, "LIST /pub"))
    finally:
        client.close()


def test_anonymous_is_read_only(anonymous: FTPServer) -> None:
    client = anonymous.login("anonymous", "guest@example.com")
    try:
        with pytest.raises(ftplib.error_perm) as refused:
            client.storbinary("STOR /pub/upload", io.BytesIO(b"x"))
        assert code(refused.value) == 550
        for line in ("MKD /pub/new", "RMD /pub", "DELE /pub/readme.txt"):
            assert refused_code(client, line) == 550, line
        # RNFR may be accepted (it only names the file), but the rename is refused.
        with pytest.raises(ftplib.error_perm) as refused:
            client.rename("/pub/readme.txt", "/pub/renamed.txt")
        assert code(refused.value) == 550
        with pytest.raises(ftplib.error_perm) as refused:
            client.storbinary("APPE /pub/readme.txt", io.BytesIO(b"x"))
        assert code(refused.value) == 550
    finally:
        client.close()
    assert sorted(p.name for p in anonymous.root.rglob("*")) == ["pub", "readme.txt"]
    assert (anonymous.root / "pub" / "readme.txt").read_bytes() == b"public\n"


def test_anonymous_only_refuses_other_users(anonymous: FTPServer) -> None:
    client = anonymous.connect()
    try:
        assert client.sendcmd("USER alice").startswith("331")
        assert refused_code(client, "PASS secret") == 530
    finally:
        client.close()


def test_user_after_login_refused(ftp: ftplib.FTP) -> None:
    assert refused_code(ftp, "USER bob") == 530
    assert ftp.pwd() == "/"


def test_commands_are_case_insensitive(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", b"abc")
    assert ftp.sendcmd(f"size {area.path}/f") == "213 3"
    assert ftp.sendcmd("noop").startswith("200")
    assert ftp.sendcmd("Pwd").startswith('257 "/"')


def test_pipelined_commands_answered_in_order(server: FTPServer, area: Area) -> None:
    area.file("f", b"12345")
    with server.control() as control:
        control.login()
        control.sock.sendall(f"SIZE {area.path}/f\r\nNOOP\r\nPWD\r\nSIZE {area.path}/nope\r\nSYST\r\n".encode())
        codes = [control.reply().code for _ in range(5)]
        assert codes == [213, 200, 257, 550, 215]


def test_stat_during_transfer(server: FTPServer, area: Area) -> None:
    area.file("big", os.urandom(8 * 1024 * 1024))
    client = server.login()
    try:
        client.voidcmd("TYPE I")
        conn = client.transfercmd(f"RETR {area.path}/big")
        try:
            conn.recv(1024)
            reply = client.sendcmd("STAT")
            assert reply.startswith("211") or reply.startswith("213"), reply
            assert client.sendcmd("NOOP").startswith("200")
            total = 1024
            while chunk := conn.recv(1 << 20):
                total += len(chunk)
        finally:
            conn.close()
        assert client.voidresp().startswith("226")
    finally:
        client.close()


def test_abor_during_download(server: FTPServer, area: Area) -> None:
    area.file("big", os.urandom(32 * 1024 * 1024))
    with server.control() as control:
        control.login()
        assert control.cmd("TYPE I").code == 200
        _host, port = control.pasv()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as data:
            assert control.cmd(f"RETR {area.path}/big").code == 150
            assert data.recv(65536)
            control.sock.sendall(b"\xff\xf4\xff\xf2", socket.MSG_OOB)
            control.send("ABOR")
            # The client read almost nothing of 32 MiB, so the transfer cannot have ended:
            # RETR is answered 426, then ABOR 226 (RFC 959 4.1.3).
            assert control.reply().code == 426
            assert control.reply().code == 226
            # The server has closed the data connection.
            try:
                while data.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass
        assert control.cmd("NOOP").code == 200
