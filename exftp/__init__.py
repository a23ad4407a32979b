"""
exftp: an extendable FTP server on Twisted, with pluggable logins and storage.
"""

from ._cleanup import CleanupReport, CleanupService, IStorageCleanup
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
    NotImplementedCommand,
    NotLoggedIn,
    ParameterNotSupported,
    PermissionDenied,
    QuotaExceeded,
    StorageUnavailable,
    TransferAborted,
    UnknownCommand,
)
from ._events import Action, FTPEvent
from ._factory import FTPFactory
from ._hooks import HookQueue, RetryLater, WebhookHook
from ._interfaces import (
    FileInfo,
    FileKind,
    IAuthenticator,
    IReadFile,
    IStorage,
    IStorageFactory,
    IStorageMetadata,
    IWriteFile,
    Session,
    UserLimits,
    WriteMode,
)
from ._logging import log_observer
from ._login import IPublicKeyAuthenticator
from ._metrics import Metrics
from ._paths import VirtualPath
from ._plugins import AuthenticatorPlugin, IAuthenticatorPlugin, IStoragePlugin, StoragePlugin
from ._protocol import FTPProtocol
from ._replies import Reply
from ._service import Config, ServerService, build_service
from ._xferlog import TransferLog
from .auth._cred import CredentialsCheckerAuthenticator
from .auth._http import (
    AuthenticationUnavailable,
    BearerAuthenticator,
    HTTPBasicAuthenticator,
    HTTPDigestAuthenticator,
    WebhookAuthenticator,
    authenticator_from_spec,
)
from .auth._simple import AnonymousAuthenticator, NoAuthAuthenticator, PassthroughAuthenticator
from .auth._users import UsersAuthenticator
from .storage._local import FileStorage, FileStorageFactory
from .storage._memory import MemoryStorage, MemoryStorageFactory
from .storage._readonly import ReadOnlyStorage

__all__ = [
    "Action",
    "AlreadyExists",
    "AnonymousAuthenticator",
    "AuthenticationUnavailable",
    "AuthenticatorPlugin",
    "BadSequence",
    "BearerAuthenticator",
    "CleanupReport",
    "CleanupService",
    "CommandSyntaxError",
    "Config",
    "CredentialsCheckerAuthenticator",
    "DataConnectionFailed",
    "DirectoryNotEmpty",
    "FTPError",
    "FTPEvent",
    "FTPFactory",
    "FTPProtocol",
    "FileInfo",
    "FileKind",
    "FileNotFound",
    "FileStorage",
    "FileStorageFactory",
    "HTTPBasicAuthenticator",
    "HTTPDigestAuthenticator",
    "HookQueue",
    "IAuthenticator",
    "IAuthenticatorPlugin",
    "IPublicKeyAuthenticator",
    "IReadFile",
    "IStorage",
    "IStorageCleanup",
    "IStorageFactory",
    "IStorageMetadata",
    "IStoragePlugin",
    "IWriteFile",
    "InsufficientStorage",
    "InvalidPath",
    "IsADirectory",
    "LoginFailed",
    "MemoryStorage",
    "MemoryStorageFactory",
    "Metrics",
    "NoAuthAuthenticator",
    "NotADirectory",
    "NotImplementedCommand",
    "NotLoggedIn",
    "ParameterNotSupported",
    "PassthroughAuthenticator",
    "PermissionDenied",
    "QuotaExceeded",
    "ReadOnlyStorage",
    "Reply",
    "RetryLater",
    "S3Config",
    "S3Storage",
    "S3StorageFactory",
    "ServerService",
    "Session",
    "StoragePlugin",
    "StorageUnavailable",
    "TransferAborted",
    "TransferLog",
    "UnknownCommand",
    "UserLimits",
    "UsersAuthenticator",
    "VirtualPath",
    "WebhookAuthenticator",
    "WebhookHook",
    "WriteMode",
    "authenticator_from_spec",
    "build_service",
    "log_observer",
]

__version__ = "0.1.0"

#: Names whose modules load optional dependencies, imported on first use.
_LAZY = {
    "S3Config": "exftp.storage._s3",
    "S3Storage": "exftp.storage._s3",
    "S3StorageFactory": "exftp.storage._s3",
}


def __getattr__(name: str) -> object:
    """Import the S3 storage (which needs botocore, the C{s3} extra) only when it is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'exftp' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
