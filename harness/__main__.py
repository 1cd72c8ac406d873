import signal
import sys

from .cli import main


def _exit_on_sigterm(signum, frame):
    # SIGTERM (timeout, CI cancelling a job, `kill`) would end Python without unwinding, and the
    # servers a run launched would outlive it, still holding the CPU the next run measures on.
    # As an exception it unwinds the launch context managers, which stop them.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)
sys.exit(main())
