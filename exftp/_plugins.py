"""
Third-party authenticators and storages, found as Twisted plugins.

A package that wants C{twistd exftp --storage NAME:ARG} (or C{--auth
NAME:ARG}) to work ships a dropin module in its own C{twisted/plugins/}
directory (without an C{__init__.py}) holding an object that provides
L{IStoragePlugin} (or L{IAuthenticatorPlugin}), the way C{twisted.cred}
checkers are found by C{strcred}::

    # twisted/plugins/exftp_example.py
    from exftp import StoragePlugin
    from example import build_storage

    example = StoragePlugin("example", "Files kept in an example store", build_storage)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

from twisted.logger import Logger
from twisted.plugin import IPlugin, getPlugins
from zope.interface import Attribute, implementer

from ._interfaces import IAuthenticator, IStorageFactory

__all__ = [
    "AuthenticatorPlugin",
    "IAuthenticatorPlugin",
    "IStoragePlugin",
    "StoragePlugin",
    "authenticator_plugins",
    "storage_plugins",
]

_log = Logger(namespace="exftp.plugins")
_T = TypeVar("_T")


class IAuthenticatorPlugin(IPlugin):
    """
    An authenticator that C{twistd exftp --auth NAME:ARGUMENT} can build.
    """

    name = Attribute("The NAME in --auth NAME:ARGUMENT (str).")
    description = Attribute("One line for --help-auth (str).")

    def build(argument: str) -> IAuthenticator:
        """
        Build the authenticator.

        @param argument: the text after C{NAME:} (empty when there is none).
        @raise ValueError: with a message naming what is wrong with C{argument}.
        """


class IStoragePlugin(IPlugin):
    """
    A storage that C{twistd exftp --storage NAME:ARGUMENT} can build.
    """

    name = Attribute("The NAME in --storage NAME:ARGUMENT (str).")
    description = Attribute("One line for --help-storage (str).")

    def build(argument: str) -> IStorageFactory:
        """
        Build the storage factory.

        @param argument: the text after C{NAME:} (empty when there is none).
        @raise ValueError: with a message naming what is wrong with C{argument}.
        """


@dataclass(frozen=True)
class _Plugin(Generic[_T]):
    """A plugin made of a name, a description and the function that builds its object."""

    name: str
    description: str
    builder: Callable[[str], _T]

    def build(self, argument: str) -> _T:
        return self.builder(argument)


@implementer(IAuthenticatorPlugin)
class AuthenticatorPlugin(_Plugin[IAuthenticator]):
    """
    An L{IAuthenticatorPlugin}: C{AuthenticatorPlugin(name, description, builder)}.

    @ivar name: the NAME in C{--auth NAME:ARGUMENT}.
    @ivar description: one line for C{--help-auth}.
    @ivar builder: called with the argument; returns the authenticator.
    """


@implementer(IStoragePlugin)
class StoragePlugin(_Plugin[IStorageFactory]):
    """
    An L{IStoragePlugin}: C{StoragePlugin(name, description, builder)}.

    @ivar name: the NAME in C{--storage NAME:ARGUMENT}.
    @ivar description: one line for C{--help-storage}.
    @ivar builder: called with the argument; returns the storage factory.
    """


def _installed(interface: Any, package: ModuleType | None) -> dict[str, Any]:
    """The plugins providing C{interface}, by name; the first of a name wins (sorted by module)."""
    found: dict[str, Any] = {}
    plugins: Iterable[Any] = getPlugins(interface) if package is None else getPlugins(interface, package)
    for plugin in plugins:
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not name or ":" in name:
            _log.warn("Ignoring exftp plugin {plugin!r}: its name must be a string without ':'", plugin=plugin)
            continue
        if name in found:
            _log.warn("Ignoring exftp plugin {plugin!r}: another plugin is named {name!r}", plugin=plugin, name=name)
            continue
        found[name] = plugin
    return found


def authenticator_plugins(package: ModuleType | None = None) -> dict[str, IAuthenticatorPlugin]:
    """
    The installed L{IAuthenticatorPlugin}s, by name.

    @param package: where to look; by default C{twisted.plugins}, which
        covers the C{twisted/plugins/} directory of every entry of C{sys.path}.
    """
    return _installed(IAuthenticatorPlugin, package)


def storage_plugins(package: ModuleType | None = None) -> dict[str, IStoragePlugin]:
    """
    The installed L{IStoragePlugin}s, by name.

    @param package: where to look; by default C{twisted.plugins}.
    """
    return _installed(IStoragePlugin, package)
