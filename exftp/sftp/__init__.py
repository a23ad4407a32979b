"""
SFTP for exftp, on Twisted Conch: the same authenticators, storages and
policy as FTP (install C{exftp[sftp]}).
"""

from ._keys import default_state_dir, fingerprint, host_keys
from ._server import SFTPFactory

__all__ = ["SFTPFactory", "default_state_dir", "fingerprint", "host_keys"]
