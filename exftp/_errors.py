"""
Errors that carry their FTP reply.

Client-caused errors (5xx) are answered and forgotten; server-caused errors
(4xx) are answered and logged.
"""

from __future__ import annotations

from ._replies import Reply


class FTPError(Exception):
    """
    An error with the reply that tells the client about it.

    @cvar reply: the reply code sent to the client.
    @cvar default_message: the text used when none is given.
    """

    reply: Reply = Reply.FILE_UNAVAILABLE
    default_message = "Requested action not taken."

    def __init__(self, message: str | None = None, reply: Reply | None = None) -> None:
        self.message = message or self.default_message
        if reply is not None:
            self.reply = reply
        super().__init__(self.message)

    @property
    def client_fault(self) -> bool:
        """Whether the client caused it (a 5xx reply) rather than the server."""
        return self.reply >= 500


class CommandSyntaxError(FTPError):
    """The command or its argument is malformed."""

    reply = Reply.SYNTAX_ERROR_IN_ARGUMENTS
    default_message = "Syntax error in parameters or arguments."


class UnknownCommand(FTPError):
    """No such command."""

    reply = Reply.SYNTAX_ERROR
    default_message = "Command not understood."


class NotImplementedCommand(FTPError):
    """The command is known but not available here (e.g. not supported by the storage)."""

    reply = Reply.NOT_IMPLEMENTED
    default_message = "Command not implemented."


class BadSequence(FTPError):
    """The command is not allowed at this point of the session."""

    reply = Reply.BAD_SEQUENCE
    default_message = "Bad sequence of commands."


class ParameterNotSupported(FTPError):
    """The command is known but this parameter is not supported."""

    reply = Reply.NOT_IMPLEMENTED_FOR_PARAMETER
    default_message = "Command not implemented for that parameter."


class NotLoggedIn(FTPError):
    """The command needs a logged-in user."""

    reply = Reply.NOT_LOGGED_IN
    default_message = "Please log in with USER and PASS first."


class LoginFailed(FTPError):
    """The credentials were refused."""

    reply = Reply.NOT_LOGGED_IN
    default_message = "Login incorrect."


class AuthenticationUnavailable(FTPError):
    """
    The authenticator cannot decide now: its service could not be reached,
    was too slow, failed, or gave an unusable answer. Server-caused: PASS is
    answered 421 and does not count as a failed login (nor toward a ban), and
    a session whose re-validation meets it goes on.
    """

    reply = Reply.SERVICE_NOT_AVAILABLE
    default_message = "Authentication service unavailable, try again later."


class InvalidPath(FTPError):
    """The path is not acceptable (forbidden characters, bad name)."""

    reply = Reply.FILE_NAME_NOT_ALLOWED
    default_message = "File name not allowed."


class FileNotFound(FTPError):
    """No such file or directory."""

    default_message = "No such file or directory."


class PermissionDenied(FTPError):
    """The user may not do this here."""

    default_message = "Permission denied."


class NotADirectory(FTPError):
    """A directory was needed."""

    default_message = "Not a directory."


class IsADirectory(FTPError):
    """A file was needed."""

    default_message = "Is a directory."


class AlreadyExists(FTPError):
    """The target already exists."""

    default_message = "File exists."


class DirectoryNotEmpty(FTPError):
    """RMD of a directory that still holds entries."""

    default_message = "Directory not empty."


class InsufficientStorage(FTPError):
    """The storage ran out of room (server-caused)."""

    reply = Reply.INSUFFICIENT_STORAGE
    default_message = "Insufficient storage space."


class QuotaExceeded(FTPError):
    """The user's allocation is used up."""

    reply = Reply.EXCEEDED_STORAGE_ALLOCATION
    default_message = "Exceeded storage allocation."


class StorageUnavailable(FTPError):
    """The storage failed for a reason of its own (server-caused)."""

    reply = Reply.LOCAL_ERROR
    default_message = "Requested action aborted: local error in processing."


class TransferAborted(FTPError):
    """The data connection broke or the transfer was aborted."""

    reply = Reply.TRANSFER_ABORTED
    default_message = "Connection closed; transfer aborted."


class DataConnectionFailed(FTPError):
    """No data connection could be opened."""

    reply = Reply.CANT_OPEN_DATA_CONNECTION
    default_message = "Can't open data connection."
