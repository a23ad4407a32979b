"""
Virtual paths: what a client names, resolved against the working directory.

A L{VirtualPath} is always absolute and normalised; C{..} stops at the root,
so no value of this type can name anything outside the user's root.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import InvalidPath

_FORBIDDEN = frozenset("\x00\r\n")
_NOT_UNICODE = "File name is not valid UTF-8: this storage holds UTF-8 names only."


def is_unicode(text: str) -> bool:
    """
    Whether C{text} is plain Unicode, without the lone surrogates that stand
    for bytes that were not UTF-8 (a name a client sent, or one read from disk).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_name(name: object) -> bool:
    """Whether C{name} may be one segment: not empty, C{.} or C{..}, no C{/}, NUL, CR or LF."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and not _FORBIDDEN.intersection(name)
    )


@dataclass(frozen=True, slots=True)
class VirtualPath:
    """
    An absolute, normalised path inside a user's root.

    @ivar segments: the names from the root down; never empty strings,
        C{.} or C{..}.
    """

    segments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The constructor is public: check here too, so that no value of this
        # type names a parent (C{..}) or, joined onto a local root, an absolute path.
        if isinstance(self.segments, str):
            raise TypeError("segments must be a sequence of names, not a string")
        object.__setattr__(self, "segments", tuple(self.segments))
        for name in self.segments:
            if not _valid_name(name):
                raise InvalidPath(f"Invalid name {name!r}.")

    @classmethod
    def root(cls) -> VirtualPath:
        """The root of the user's tree."""
        return cls(())

    @classmethod
    def parse(cls, text: str) -> VirtualPath:
        """Parse an absolute path such as C{/a/b}; relative text is taken from the root."""
        return cls.root().resolve(text)

    def resolve(self, text: str) -> VirtualPath:
        """
        Resolve C{text} as a client argument, relative to this directory.

        @raise InvalidPath: when the text holds NUL, CR or LF.
        """
        if _FORBIDDEN.intersection(text):
            raise InvalidPath("Path contains forbidden characters.")
        parts: list[str] = [] if text.startswith("/") else list(self.segments)
        for name in text.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(name)
        return VirtualPath(tuple(parts))

    def child(self, name: str) -> VirtualPath:
        """The entry C{name} inside this directory."""
        return VirtualPath((*self.segments, name))

    @property
    def parent(self) -> VirtualPath:
        """The containing directory; the root is its own parent."""
        return VirtualPath(self.segments[:-1])

    @property
    def name(self) -> str:
        """The last segment, or C{""} for the root."""
        return self.segments[-1] if self.segments else ""

    @property
    def is_root(self) -> bool:
        """Whether this is the root."""
        return not self.segments

    def is_within(self, other: VirtualPath) -> bool:
        """Whether this path is C{other} or lies beneath it."""
        return self.segments[: len(other.segments)] == other.segments

    def unicode_only(self) -> VirtualPath:
        """
        This path, for a storage that holds UTF-8 names only (S3 keys).

        @raise InvalidPath: (553) when a name in it is not valid UTF-8.
        """
        if not all(map(is_unicode, self.segments)):
            raise InvalidPath(_NOT_UNICODE)
        return self

    def __str__(self) -> str:
        return "/" + "/".join(self.segments)
