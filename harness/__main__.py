"""The `harness` command's entry point (also `python -m harness`).

Ctrl-C while the command is still importing its libraries (torch alone takes a second or two) ends it with
one line and exit code 130 instead of a traceback through torch's import machinery: nothing has been read
or written yet, so nothing is lost. Once the command runs, Ctrl-C is a KeyboardInterrupt again, which the
commands handle (a sweep releases its claims, a query stops)."""

from __future__ import annotations

import os
import signal


def _interrupted_while_starting(signum, frame) -> None:
    os.write(2, b"error: interrupted while starting; nothing was done\n")
    os._exit(130)


def main() -> None:
    before = signal.getsignal(signal.SIGINT)
    if before is signal.default_int_handler:  # not where Ctrl-C is ignored (a job started with &)
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    from harness.cli import main as command

    signal.signal(signal.SIGINT, before)
    command()


if __name__ == "__main__":
    main()
