"""A graceful stop on SIGTERM or SIGINT. Standard library only: the pilot uses it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading


def stop_on_signals(*signums: signal.Signals) -> threading.Event:
    """An event set by SIGTERM or SIGINT (or by ``signums``), for a graceful stop.

    The handler takes no lock: it writes a byte to a pipe, and a thread of its own
    reads it and sets the event. A handler that set the event itself runs in the main
    thread wherever that thread was interrupted, inside the event's own lock too (in
    ``Event.wait``, or in the handler of a first signal when a second one comes, as
    SIGTERM from the process group and then from the parent do), and would wait for
    that lock forever.
    """
    stop = threading.Event()
    read, write = os.pipe()
    os.set_blocking(write, False)

    def handler(signum: int, _frame: object) -> None:
        # The pipe is full, or read and closed: the event is set already.
        with contextlib.suppress(OSError):
            os.write(write, b"\0")

    def relay() -> None:
        os.read(read, 1)
        stop.set()
        os.close(read)

    threading.Thread(target=relay, name="stop-on-signals", daemon=True).start()
    for signum in signums or (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    return stop
