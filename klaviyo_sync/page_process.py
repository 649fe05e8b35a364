"""The page process: the program a profiles pass that reads every customer starts to read
and build its pages (business/profile_pages.py says why, and how they travel).

    python -m klaviyo_sync.page_process --fd N

It is its own wiring, as app.py is the commands': it reads its :class:`PageSpec`
(pickled) on stdin, opens the business database read-only (:func:`open_business`), says
it is ready on descriptor N, reads on stdin where to start (the pass has read the pages
before it meanwhile) and sends each page from there, then the end; an error goes to the
pass, which raises it. Stdin's end instead of the start means the pass read everything
itself. It stops when the pass closes the pipe (its next send fails, also when the pass was
killed), and ignores SIGINT and SIGTERM, which a terminal's Ctrl-C and systemd's stop
send to the whole process group: the pass decides when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import IO

import sqlalchemy as sa

from klaviyo_sync.business.customers import SqlCustomerReader
from klaviyo_sync.business.db import open_business
from klaviyo_sync.business.profile_pages import END, READY, Failed, PageSpec, read_pages
from klaviyo_sync.business.profiles import ProfileBuilder
from klaviyo_sync.exceptions import BusinessDataError
from klaviyo_sync.gctune import tune_collector
from klaviyo_sync.logconfig import configure


def serve(spec: PageSpec, pages: Connection, orders: IO[bytes]) -> None:
    """Say :data:`READY`, then read and build every page ``spec`` asks for after the
    position ``orders`` gives, and send it, then :data:`END`."""
    log = spec.logging
    configure(log.level, log.format, log.mask_emails)  # to stderr, as the pass logs
    engine = open_business(spec.business.url)
    try:
        reader = SqlCustomerReader(engine, spec.business, tuple(spec.extra))
        builder = ProfileBuilder(spec.properties, spec.extra, reader.extra_columns)
        try:  # ready means the database answers
            engine.connect().close()
        except sa.exc.SQLAlchemyError as exc:
            raise BusinessDataError(f"cannot read the business database: {exc}") from exc
        pages.send(READY)
        try:
            after = pickle.load(orders)
        except EOFError:
            return  # the pass read every page itself
        for page in read_pages(reader, builder, spec.since, spec.page_size, spec.with_keys,
                               after):
            pages.send(page)
        pages.send(END)
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m klaviyo_sync.page_process",
        description="Read and build a profiles pass's pages (the pass starts this).")
    parser.add_argument("--fd", type=int, required=True, help="descriptor to send pages to")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pages = Connection(args.fd, readable=False)
    try:
        try:
            spec = pickle.load(sys.stdin.buffer)
        except EOFError:
            return 0  # the pass went before saying what to read
        tune_collector()  # as the console script does for the pass's own process
        try:
            serve(spec, pages, sys.stdin.buffer)
        except (BrokenPipeError, ConnectionResetError):
            return 0  # the pass stopped reading
        except Exception as exc:  # sent to the pass, which raises it
            try:
                pickle.dumps(exc)
            except Exception:
                exc = BusinessDataError(f"reading customers: {exc}")
            with contextlib.suppress(OSError):  # the pass has gone: nobody to tell
                pages.send(Failed(exc))
            return 1
        return 0
    finally:
        pages.close()


if __name__ == "__main__":
    sys.exit(main())
