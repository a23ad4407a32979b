"""
Runs pyftpdlib's default server (one process, asynchronous, sendfile on) for
the benchmark: C{python3 _pyftpd.py ROOT USER PASSWORD LOGFILE MAX_CONS MAX_CONS_PER_IP}.

It logs at INFO level (connections, logins, transfers), as exftp does, and
writes C{pyftpdlib listening on 127.0.0.1:PORT} once it accepts connections.
"""

from __future__ import annotations

import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main() -> None:
    root, user, password, logfile, max_cons, max_cons_per_ip = sys.argv[1:7]
    logging.basicConfig(filename=logfile, level=logging.INFO, format="%(asctime)s %(message)s")
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler = FTPHandler
    handler.authorizer = authorizer
    handler.banner = "pyftpdlib ready."
    server = FTPServer(("127.0.0.1", 0), handler)
    # The defaults are 512 connections in all and unlimited per address; the
    # benchmark sets the same limits for every server.
    server.max_cons = int(max_cons)
    server.max_cons_per_ip = int(max_cons_per_ip)
    host, port = server.address[:2]
    logging.getLogger().info("pyftpdlib listening on %s:%d", host, port)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
