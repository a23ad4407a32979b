"""
REST past the end of a file (RFC 3659 5.4): 554, so that no upload leaves a
hole (a sparse file that a later APPE or REST+STOR writes out as real zeros).
"""

from __future__ import annotations

import ftplib
import io

import pytest
from conftest import Area, code, retr_bytes

_DATA = b"0123456789"


def _refused(call: object) -> int:
    with pytest.raises(ftplib.error_perm) as refused:
        call()  # type: ignore[operator]
    return code(refused.value)


def test_upload_past_the_end_is_554(ftp: ftplib.FTP, area: Area) -> None:
    target = area.file("f", _DATA)
    path = f"{area.path}/f"
    far = 10**9
    assert _refused(lambda: ftp.storbinary(f"STOR {path}", io.BytesIO(b"abc"), rest=far)) == 554
    assert _refused(lambda: ftp.storbinary(f"APPE {path}", io.BytesIO(b"abc"), rest=len(_DATA) + 1)) == 554
    assert _refused(lambda: ftp.storbinary(f"STOR {area.path}/new", io.BytesIO(b"abc"), rest=5)) == 554
    assert target.read_bytes() == _DATA
    assert not (area.local / "new").exists()
    # The refused offset is gone; one at the end resumes the upload.
    assert ftp.storbinary(f"STOR {path}", io.BytesIO(b"abc"), rest=len(_DATA)).startswith("226")
    assert target.read_bytes() == _DATA + b"abc"


def test_download_past_the_end_is_554(ftp: ftplib.FTP, area: Area) -> None:
    area.file("f", _DATA)
    path = f"{area.path}/f"
    assert _refused(lambda: ftp.retrbinary(f"RETR {path}", lambda _: None, rest=len(_DATA) + 1)) == 554
    assert _refused(lambda: ftp.retrbinary(f"RETR {area.path}/missing", lambda _: None, rest=1)) == 550
    assert retr_bytes(ftp, path) == _DATA
