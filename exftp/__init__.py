"""
exftp: an extendable FTP server on Twisted, with pluggable logins and storage.
"""

from ._errors import (
    AlreadyExists,
    BadSequence,
    CommandSyntaxError,
    DataConnectionFailed,
    DirectoryNotEmpty,
    FileNotFound,
    FTPError,
    InsufficientStorage,
    InvalidPath,
    IsADirectory,
    LoginFailed,
    NotADirectory,
    NotLoggedIn,
    ParameterNotSupported,
    PermissionDenied,
    QuotaExceeded,
    StorageUnavailable,
    TransferAborted,
    UnknownCommand,
)
from ._factory import FTPFactory
from ._interfaces import (
    FileInfo,
    FileKind,
    IAuthenticator,
    IReadFile,
    IStorage,
    IStorageFactory,
    IWriteFile,
    Session,
    WriteMode,
)
from ._paths import VirtualPath
from ._protocol import FTPProtocol
from ._replies import Reply
from .auth._cred import CredentialsCheckerAuthenticator
from .auth._simple import AnonymousAuthenticator, NoAuthAuthenticator, PassthroughAuthenticator
from .storage._local import FileStorage, FileStorageFactory
from .storage._memory import MemoryStorage, MemoryStorageFactory
from .storage._readonly import ReadOnlyStorage

__all__ = [
    "AlreadyExists",
    "AnonymousAuthenticator",
    "BadSequence",
    "CommandSyntaxError",
    "CredentialsCheckerAuthenticator",
    "DataConnectionFailed",
    "DirectoryNotEmpty",
    "FTPError",
    "FTPFactory",
    "FTPProtocol",
    "FileInfo",
    "FileKind",
    "FileNotFound",
    "FileStorage",
    "FileStorageFactory",
    "IAuthenticator",
    "IReadFile",
    "IStorage",
    "IStorageFactory",
    "IWriteFile",
    "InsufficientStorage",
    "InvalidPath",
    "IsADirectory",
    "LoginFailed",
    "MemoryStorage",
    "MemoryStorageFactory",
    "NoAuthAuthenticator",
    "NotADirectory",
    "NotLoggedIn",
    "ParameterNotSupported",
    "PassthroughAuthenticator",
    "PermissionDenied",
    "QuotaExceeded",
    "ReadOnlyStorage",
    "Reply",
    "Session",
    "StorageUnavailable",
    "TransferAborted",
    "UnknownCommand",
    "VirtualPath",
    "WriteMode",
]

__version__ = "0.1.0"
