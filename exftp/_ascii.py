"""
TYPE A line-ending conversion, chunk by chunk.

Downloads turn bare LF into CRLF; uploads turn CRLF into LF. A CR at the end
of one chunk is held until the next one tells what follows it.
"""

from __future__ import annotations


class AsciiEncoder:
    """Converts stored text (LF) to network text (CRLF)."""

    def __init__(self) -> None:
        self._last_was_cr = False

    def encode(self, chunk: bytes) -> bytes:
        """Convert one chunk; bare LFs become CRLF, existing CRLFs are kept."""
        if not chunk:
            return chunk
        out = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._last_was_cr and chunk.startswith(b"\n"):
            out = out[1:]
        self._last_was_cr = chunk.endswith(b"\r")
        return out


class AsciiDecoder:
    """Converts network text (CRLF) to stored text (LF)."""

    def __init__(self) -> None:
        self._held_cr = False

    def decode(self, chunk: bytes) -> bytes:
        """Convert one chunk; a trailing CR is held back for the next call."""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._held_cr = True
        return chunk.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        """What is still held back at the end of the transfer."""
        held, self._held_cr = self._held_cr, False
        return b"\r" if held else b""
