"""
Tests for TYPE A line-ending conversion across chunk boundaries.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exftp._ascii import AsciiDecoder, AsciiEncoder

#: Bytes rich in CR and LF, so that boundaries fall between them often.
_text = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\n\r", b"xy"]), max_size=30).map(b"".join)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split C{data} at the (sorted, clamped) positions C{cuts}."""
    points = sorted({min(cut, len(data)) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _decode(chunks: list[bytes]) -> bytes:
    decoder = AsciiDecoder()
    return b"".join(decoder.decode(chunk) for chunk in chunks) + decoder.flush()


def _encode(chunks: list[bytes]) -> bytes:
    encoder = AsciiEncoder()
    return b"".join(encoder.encode(chunk) for chunk in chunks)


@pytest.mark.parametrize(
    ("stored", "network"),
    [
        (b"", b""),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb", b"a\r\nb"),
        (b"\n\n", b"\r\n\r\n"),
        (b"bare\rcr", b"bare\rcr"),
        (b"\r\r\n", b"\r\r\n"),
    ],
)
def test_encode_table(stored: bytes, network: bytes) -> None:
    assert AsciiEncoder().encode(stored) == network


@pytest.mark.parametrize(
    ("network", "stored"),
    [
        (b"", b""),
        (b"a\r\nb\r\n", b"a\nb\n"),
        (b"a\nb", b"a\nb"),
        (b"bare\rcr", b"bare\rcr"),
        (b"\r\r\n", b"\r\n"),
        (b"end\r", b"end\r"),
    ],
)
def test_decode_table(network: bytes, stored: bytes) -> None:
    assert _decode([network]) == stored


@pytest.mark.parametrize(
    "chunks",
    [[b"a\r", b"\nb"], [b"\r", b"", b"\n"], [b"a\r", b"\r", b"\n"], [b"\r", b"\r"]],
)
def test_decoder_holds_cr_across_chunks(chunks: list[bytes]) -> None:
    assert _decode(chunks) == _decode([b"".join(chunks)])


def test_decoder_flush_gives_back_a_final_cr_once() -> None:
    decoder = AsciiDecoder()
    assert decoder.decode(b"x\r") == b"x"
    assert decoder.flush() == b"\r"
    assert decoder.flush() == b""


def test_encoder_does_not_double_a_crlf_split_across_chunks() -> None:
    encoder = AsciiEncoder()
    assert encoder.encode(b"a\r") + encoder.encode(b"\nb") == b"a\r\nb"


@given(_text, st.lists(st.integers(min_value=0, max_value=120), max_size=8))
def test_decoding_any_chunking_equals_decoding_whole(data: bytes, cuts: list[int]) -> None:
    assert _decode(_chunked(data, cuts)) == _decode([data])


@given(_text, st.lists(st.integers(min_value=0, max_value=120), max_size=8))
def test_encoding_any_chunking_equals_encoding_whole(data: bytes, cuts: list[int]) -> None:
    assert _encode(_chunked(data, cuts)) == _encode([data])


@given(_text)
def test_encoded_text_has_no_bare_lf(data: bytes) -> None:
    encoded = _encode([data])
    assert encoded.count(b"\n") == encoded.count(b"\r\n")


@given(_text)
def test_decode_undoes_encode_for_text_without_cr(data: bytes) -> None:
    stored = data.replace(b"\r", b"")
    assert _decode([_encode([stored])]) == stored


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_decoding_keeps_every_byte_but_the_cr_of_crlf(data: bytes, cuts: list[int]) -> None:
    decoded = _decode(_chunked(data, cuts))
    assert len(decoded) == len(data) - data.count(b"\r\n")
