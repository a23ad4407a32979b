"""
SSH host keys: loaded from files, or generated once into the state directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, FingerprintFormats, Key
from twisted.logger import Logger

_log = Logger(namespace="exftp")

#: The name of the generated host key inside the state directory.
GENERATED_KEY = "ssh_host_ed25519_key"
#: The host key types served, in the order clients are offered them.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def default_state_dir(environ: Mapping[str, str] | None = None) -> str:
    """
    Where state (the generated host key) is kept: systemd's
    C{$STATE_DIRECTORY}, else C{$XDG_STATE_HOME/exftp}, else
    C{~/.local/state/exftp}.
    """
    environ = os.environ if environ is None else environ
    if environ.get("STATE_DIRECTORY"):
        return environ["STATE_DIRECTORY"].split(":")[0]
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "exftp")


def fingerprint(key: Key) -> str:
    """The key's type and SHA-256 fingerprint, as C{ssh-keygen -l} shows it."""
    digest = key.fingerprint(FingerprintFormats.SHA256_BASE64)
    return f"{key.sshType().decode()} SHA256:{digest.removeprefix('SHA256:').rstrip('=')}"


def load_host_key(path: str) -> Key:
    """
    Load a private host key (OpenSSH or PEM format, unencrypted).

    @raise ValueError: with a clear message when it cannot be used.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}") from None
    try:
        key = Key.fromString(data)
    except EncryptedKeyError:
        raise ValueError(f"{path}: the key is encrypted; host keys must not have a passphrase") from None
    except (BadKeyError, ValueError) as error:
        raise ValueError(f"{path}: not a private key ({error})") from None
    if key.isPublic():
        raise ValueError(f"{path}: a public key; give the private key file")
    if key.sshType().decode() not in KEY_TYPES:
        raise ValueError(f"{path}: unsupported key type {key.sshType().decode()} (use Ed25519, ECDSA or RSA)")
    loaded: Key = key
    return loaded


def generated_host_key(state_dir: str) -> tuple[Key, bool]:
    """
    The Ed25519 host key kept in C{state_dir}, generated on first use (the
    directory is created, mode 0700; the key is written atomically, mode 0600).

    @return: the key, and whether it was generated now.
    @raise ValueError: when the directory or the key cannot be used.
    """
    path = os.path.join(state_dir, GENERATED_KEY)
    if os.path.exists(path):
        return load_host_key(path), False
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        key = Key(ed25519.Ed25519PrivateKey.generate())
        temporary = f"{path}.{os.getpid()}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(key.toString("openssh"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        Path(f"{path}.pub").write_bytes(key.public().toString("openssh") + b"\n")
    except OSError as error:
        raise ValueError(f"--state-dir {state_dir}: cannot store the host key: {error.strerror}") from None
    _log.info("Generated a new SSH host key: {path} ({fingerprint})", path=path, fingerprint=fingerprint(key))
    return key, True


def host_keys(paths: Sequence[str], state_dir: str) -> tuple[list[Key], bool]:
    """
    The host keys to serve: those in C{paths}, or else the generated one.

    @return: the keys, and whether a key was generated now.
    @raise ValueError: for a key that cannot be used, or two of one type.
    """
    if not paths:
        key, generated = generated_host_key(state_dir)
        return [key], generated
    keys: dict[bytes, Key] = {}
    for path in paths:
        key = load_host_key(path)
        if key.sshType() in keys:
            raise ValueError(f"{path}: a second {key.sshType().decode()} host key; give one key of each type")
        keys[key.sshType()] = key
    return list(keys.values()), False
