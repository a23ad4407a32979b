"""
Resolve paths beneath a root directory with the system calls that act on them.

A path checked by its string and used later by its string can be redirected
in between: a directory swapped for a link that leads out makes the second
resolution land outside the root. Here a path is walked one name at a time
from a descriptor of the root with C{O_NOFOLLOW}; a link met on the way is
read and its target walked the same way (C{..} stops being allowed at the
root), and the caller acts on the last directory's descriptor with the
C{dir_fd} forms of the C{os} calls. Nothing is resolved twice by string.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Sequence
from dataclasses import dataclass

from .._cleanup import RESERVED_PREFIX
from .._errors import FileNotFound, PermissionDenied

#: Links followed in one resolution at most, as the kernel's own limit.
MAX_LINKS = 40
#: Flags of the descriptors held while walking: no permission needed, no link followed.
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

OUTSIDE = "Permission denied: link leads outside the root."


class LeadsOutside(PermissionDenied):
    """A link on the way leads outside the root."""

    default_message = OUTSIDE


def _error(number: int) -> OSError:
    return OSError(number, os.strerror(number))


def open_root(root: str) -> int:
    """
    A descriptor of the directory C{root}, an absolute path without links,
    opened one name at a time without following any: a directory on the way
    swapped for a link fails (C{ELOOP} or C{ENOTDIR}) instead of being followed.
    """
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in root.split("/"):
            if name:
                following = os.open(name, _PATH | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class Found:
    """
    Where a walk ended: the directory C{parent} (a descriptor this owns)
    and the C{name} in it, which is not a link (unless the walk was asked
    not to follow the last one) and may not exist. C{name} is C{"."} when
    the walk ended on a directory itself, such as the root.
    """

    parent: int
    name: str

    def close(self) -> None:
        fd, self.parent = self.parent, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Found:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def lstat(self) -> os.stat_result:
        """The entry's own status (a link's, not its target's)."""
        return os.stat(self.name, dir_fd=self.parent, follow_symlinks=False)

    def open(self, flags: int, mode: int = 0o777) -> int:
        """Open the entry, never through a link: one swapped in since the walk fails with C{ELOOP}."""
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.parent)


def walk(root: str, root_fd: int, segments: Sequence[str], follow_last: bool = True) -> Found:
    """
    Walk C{segments} beneath C{root_fd}, the descriptor of C{root} (its real path).

    Every link on the way is followed inside the root; the last one only
    when C{follow_last}. A missing last name is not an error: it may be
    about to be made.

    @raise LeadsOutside: when a link leads out of the root (C{..} above
        it, or an absolute target elsewhere).
    @raise FileNotFound: for a name this storage keeps for itself.
    @raise OSError: C{ENOENT} for a missing directory on the way,
        C{ENOTDIR}, C{ELOOP} for too many links, and whatever the kernel says.
    """
    stack = [os.dup(root_fd)]
    pending = list(reversed(segments))
    links = 0
    # Levels above the root a link's ".." has climbed: nothing there is
    # opened; only the names that lead straight back down into the root are
    # taken, by the root's own path (it has no links).
    ancestors = [name for name in root.split("/") if name]
    above = 0
    try:
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            last = not any(part not in ("", ".") for part in pending)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                else:
                    above = min(above + 1, len(ancestors))
                continue
            if above:
                if name != ancestors[len(ancestors) - above] or (last and not follow_last):
                    raise LeadsOutside()
                above -= 1
                continue
            if name.startswith(RESERVED_PREFIX):
                raise FileNotFound()
            if last and not follow_last:
                return Found(stack.pop(), name)
            try:
                fd = os.open(name, _PATH, dir_fd=stack[-1])
            except FileNotFoundError:
                if last:
                    return Found(stack.pop(), name)
                raise
            try:
                mode = os.fstat(fd).st_mode
            except BaseException:
                os.close(fd)
                raise
            if stat_module.S_ISDIR(mode) and not last:
                stack.append(fd)
                continue
            os.close(fd)
            if stat_module.S_ISLNK(mode):
                links += 1
                if links > MAX_LINKS:
                    raise _error(errno.ELOOP)
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    names = _beneath(root, target)
                    while len(stack) > 1:
                        os.close(stack.pop())
                else:
                    names = target.split("/")
                pending.extend(reversed(names))
            elif last:
                return Found(stack.pop(), name)
            else:
                raise _error(errno.ENOTDIR)
        if above:
            raise LeadsOutside()
        return Found(stack.pop(), ".")
    finally:
        for fd in stack:
            os.close(fd)


def _beneath(root: str, target: str) -> list[str]:
    """The names of the absolute link C{target} below C{root}, or L{LeadsOutside}."""
    if target != root and not target.startswith(root.rstrip("/") + "/"):
        raise LeadsOutside()
    return target[len(root) :].split("/")


def leads_outside(root: str, root_fd: int, segments: Sequence[str]) -> bool:
    """Whether following C{segments} (a link, typically) leads out of the root."""
    try:
        walk(root, root_fd, segments).close()
    except LeadsOutside:
        return True
    except (OSError, FileNotFound):
        pass
    return False
