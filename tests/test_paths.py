"""
Tests for L{exftp.VirtualPath}: resolution tables and properties.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exftp import InvalidPath, VirtualPath

#: Segments of client text, with the tricky ones over-represented.
_segment = st.one_of(
    st.sampled_from(["", ".", "..", "...", "a", "b c", "~", "é", ".hidden"]),
    st.text(alphabet=st.characters(blacklist_characters="/\x00\r\n"), max_size=6),
)
_client_text = st.lists(_segment, max_size=8).map("/".join)
_names = st.text(alphabet=st.characters(blacklist_characters="/\x00\r\n"), min_size=1, max_size=6).filter(
    lambda name: name not in (".", "..")
)
_paths = st.lists(_names, max_size=5).map(lambda names: VirtualPath(tuple(names)))


@pytest.mark.parametrize(
    ("cwd", "text", "expected"),
    [
        ("/", "a", "/a"),
        ("/", "/a/b", "/a/b"),
        ("/a/b", "c", "/a/b/c"),
        ("/a/b", "/c", "/c"),
        ("/a/b", "..", "/a"),
        ("/a/b", "../..", "/"),
        ("/a/b", "../../../../..", "/"),
        ("/", "..", "/"),
        ("/", "/..", "/"),
        ("/", "/../etc/passwd", "/etc/passwd"),
        ("/a", "b/../../../c", "/c"),
        ("/a", ".", "/a"),
        ("/a", "./b/./c/.", "/a/b/c"),
        ("/a", "b//c///", "/a/b/c"),
        ("/a", "", "/a"),
        ("/a", "/", "/"),
        ("/a", "//", "/"),
        ("/", "...", "/..."),
        ("/", "..a", "/..a"),
        ("/", "a..", "/a.."),
        ("/", " x ", "/ x "),
        ("/", "x\\..\\y", "/x\\..\\y"),
    ],
)
def test_resolve_table(cwd: str, text: str, expected: str) -> None:
    assert str(VirtualPath.parse(cwd).resolve(text)) == expected


@pytest.mark.parametrize("text", ["a\x00b", "a\rb", "a\nb", "\n", "/a/\r\n/b"])
def test_resolve_refuses_forbidden_characters(text: str) -> None:
    with pytest.raises(InvalidPath):
        VirtualPath.root().resolve(text)


@pytest.mark.parametrize(
    "segments", [("..",), (".",), ("",), ("a/b",), ("/etc",), ("a", ".."), ("a\x00",), ("a\n",), ("a\r",)]
)
def test_constructor_refuses_what_resolve_never_makes(segments: tuple[str, ...]) -> None:
    with pytest.raises(InvalidPath):
        VirtualPath(segments)


def test_constructor_refuses_a_string() -> None:
    with pytest.raises(TypeError):
        VirtualPath("abc")  # type: ignore[arg-type]


def test_constructor_normalises_sequences_to_tuples() -> None:
    path = VirtualPath(["a", "b"])  # type: ignore[arg-type]
    assert path == VirtualPath(("a", "b"))
    assert hash(path) == hash(VirtualPath(("a", "b")))


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\x00", "a\n"])
def test_child_refuses_bad_names(name: str) -> None:
    with pytest.raises(InvalidPath):
        VirtualPath.root().child(name)


def test_child_parent_name() -> None:
    path = VirtualPath.parse("/a").child("b c")
    assert str(path) == "/a/b c"
    assert path.name == "b c"
    assert path.parent == VirtualPath.parse("/a")
    assert VirtualPath.root().parent == VirtualPath.root()
    assert VirtualPath.root().name == ""
    assert VirtualPath.root().is_root
    assert not path.is_root


@pytest.mark.parametrize(
    ("path", "other", "expected"),
    [
        ("/a/b", "/a", True),
        ("/a", "/a", True),
        ("/a", "/", True),
        ("/", "/", True),
        ("/", "/a", False),
        ("/ab", "/a", False),
        ("/a", "/a/b", False),
        ("/b/a", "/a", False),
    ],
)
def test_is_within(path: str, other: str, expected: bool) -> None:
    assert VirtualPath.parse(path).is_within(VirtualPath.parse(other)) is expected


def test_paths_are_immutable_values() -> None:
    path = VirtualPath.parse("/a")
    with pytest.raises(AttributeError):
        path.segments = ("b",)  # type: ignore[misc]
    assert {VirtualPath.parse("/a/b"), VirtualPath.parse("a/./b")} == {path.child("b")}


@given(_paths, _client_text)
def test_resolve_never_yields_dot_segments(cwd: VirtualPath, text: str) -> None:
    result = cwd.resolve(text)
    assert all(name not in ("", ".", "..") and "/" not in name for name in result.segments)
    assert str(result).startswith("/")
    assert "//" not in str(result)


@given(_paths, _client_text)
def test_resolve_round_trips_through_str(cwd: VirtualPath, text: str) -> None:
    result = cwd.resolve(text)
    assert VirtualPath.parse(str(result)) == result
    assert result.resolve(".") == result


@given(_paths, _client_text)
def test_absolute_text_ignores_the_working_directory(cwd: VirtualPath, text: str) -> None:
    assert cwd.resolve("/" + text) == VirtualPath.root().resolve(text)


@given(_paths, st.lists(_names, max_size=4))
def test_relative_text_without_dotdot_stays_below_cwd(cwd: VirtualPath, names: list[str]) -> None:
    result = cwd.resolve("/".join(names))
    assert result.is_within(cwd)
    assert result.segments == cwd.segments + tuple(names)


@given(_paths, st.integers(min_value=0, max_value=8))
def test_dotdot_climbs_one_level_each_and_stops_at_root(cwd: VirtualPath, count: int) -> None:
    result = cwd.resolve("/".join([".."] * count))
    assert result.segments == cwd.segments[: max(len(cwd.segments) - count, 0)]


@pytest.mark.parametrize("name", ["caf\udce9", "\ud800", "a\udcffb"])
def test_unicode_only_refuses_names_that_are_not_utf8(name: str) -> None:
    """A storage that holds UTF-8 names only (S3) refuses the surrogates of bytes that were not UTF-8, with 553."""
    path = VirtualPath(("d", name))
    with pytest.raises(InvalidPath) as refused:
        path.unicode_only()
    assert refused.value.reply == 553 and "UTF-8" in refused.value.message


def test_unicode_only_keeps_unicode_paths() -> None:
    path = VirtualPath.parse("/d/caf\u00e9/\U0001f600")
    assert path.unicode_only() is path
