"""
TLS settings for FTPS: the server certificate, reloadable, and the policy
(require TLS for logins, PROT P for transfers, session reuse on data
connections).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as _openssl
from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger(namespace="exftp.tls")
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def load_certificate_options(cert_file: str, key_file: str, tls12_only: bool = False) -> ssl.CertificateOptions:
    """
    Build TLS server options from PEM files: the certificate file may hold
    the chain after the server certificate. TLS 1.2 is the minimum; sessions
    and tickets are on so that data connections can resume a session.

    @param tls12_only: also make TLS 1.2 the maximum. TLS 1.3 servers send
        session tickets after the handshake; an uploading client that never
        reads them (lftp/GnuTLS) then closes with a TCP reset, which can
        lose the end of the upload. Data connections are therefore TLS 1.2.
    @raise ValueError: when the files cannot be read or do not match.
    """
    try:
        with open(cert_file, "rb") as f:
            cert_pem = f.read()
        with open(key_file, "rb") as f:
            key_pem = f.read()
        blocks = _PEM_CERTIFICATE.findall(cert_pem)
        if not blocks:
            raise ValueError(f"{cert_file}: no PEM certificate found")
        key = ssl.KeyPair.load(key_pem, FILETYPE_PEM)
        leaf = ssl.PrivateCertificate.load(blocks[0], key, FILETYPE_PEM)
        chain = [ssl.Certificate.loadPEM(block).original for block in blocks[1:]]
        return ssl.CertificateOptions(
            privateKey=leaf.privateKey.original,
            certificate=leaf.original,
            extraCertChain=chain,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_2 if tls12_only else None,
            enableSessions=True,
            enableSessionTickets=True,
        )
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(f"cannot load TLS certificate {cert_file} / key {key_file}: {error}") from None


@dataclass
class TLSPolicy:
    """
    What FTPS requires of clients.

    @ivar require_tls: refuse USER/PASS on a connection that is not secured.
    @ivar require_protected_data: refuse transfers unless PROT P is set.
    @ivar require_session_reuse: refuse TLS data connections that do not
        resume the control connection's session (vsftpd C{require_ssl_reuse}).
    """

    require_tls: bool = False
    require_protected_data: bool = False
    require_session_reuse: bool = False


class TLSSettings:
    """
    The server certificate for AUTH TLS, reloadable without dropping sessions.

    Control connections may use TLS 1.3; data connections use their own
    TLS 1.2 context (see L{load_certificate_options}). When data connections
    must resume the control connection's session, both are TLS 1.2 and
    share one context.

    @param cert_file: PEM certificate, optionally followed by its chain.
    @param key_file: PEM private key.
    @param shared_session: data connections must resume the control session.
    """

    def __init__(self, cert_file: str, key_file: str, shared_session: bool = False) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.shared_session = shared_session
        self.options, self.data_options = self._load()

    def _load(self) -> tuple[ssl.CertificateOptions, ssl.CertificateOptions]:
        control = load_certificate_options(self.cert_file, self.key_file, tls12_only=self.shared_session)
        if self.shared_session:
            return control, control
        return control, load_certificate_options(self.cert_file, self.key_file, tls12_only=True)

    def reload(self) -> bool:
        """Load the files again (on SIGHUP); keep the old certificate if they are broken."""
        try:
            self.options, self.data_options = self._load()
        except ValueError as error:
            _log.error("TLS certificate not reloaded: {why}", why=str(error))
            return False
        _log.info("TLS certificate reloaded from {cert}", cert=self.cert_file)
        return True


@implementer(IOpenSSLContextFactory)
class SameContext:
    """Serves data connections with the control connection's own TLS context (so sessions resume)."""

    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


def session_reused(transport: Any) -> bool:
    """Whether the TLS handshake on C{transport} resumed an earlier session."""
    connection = transport.getHandle()
    return bool(_openssl.SSL_session_reused(connection._ssl))


def control_context(transport: Any) -> SSL.Context | None:
    """The TLS context of a secured control connection, or C{None}."""
    try:
        connection = transport.getHandle()
    except Exception:
        return None
    if not isinstance(connection, SSL.Connection):
        return None
    return connection.get_context()
