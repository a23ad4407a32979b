"""
C{exftp-cleanup}: the command line that removes what exftp servers that died
left behind. Apart from L{exftp._cleanup} so that the storages, which use
that module's journal and rules, never import the twistd options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from twisted.python.usage import UsageError

from ._cleanup import DEFAULT_MAX_AGE, check_node, clean_up_now, default_node
from ._tap import make_storage_factory


def _age(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _node_argument(text: str) -> str | None:
    if not text:
        return None
    try:
        return check_node(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    C{exftp-cleanup}: remove the upload leftovers of a node that is not
    running, and of any node older than an age, then exit.
    """
    parser = argparse.ArgumentParser(
        prog="exftp-cleanup",
        description="Remove what exftp servers that died left behind: temporary upload files, "
        "open multipart uploads. Only leftovers exftp made are touched.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--storage", "-s", help="the storage, as for twistd exftp: file:DIR or s3:bucket=NAME[:...]")
    where.add_argument("--root", "-r", help="a directory (shorthand for --storage file:DIR)")
    parser.add_argument(
        "--node",
        type=_node_argument,
        default=default_node(),
        help="remove all leftovers of this node, which must not be running (default: this host's name, "
        "%(default)s; '' for none)",
    )
    parser.add_argument(
        "--older-than",
        type=_age,
        default=DEFAULT_MAX_AGE,
        metavar="SECONDS",
        help="also remove any node's leftovers older than this (default: %(default)g, a week)",
    )
    options = parser.parse_args(argv)
    try:
        factory = make_storage_factory(options.storage or f"file:{options.root}")
    except UsageError as error:
        parser.error(str(error))
    clean_up_now(factory, options.node, options.older_than)


if __name__ == "__main__":
    main()
