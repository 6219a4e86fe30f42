"""`python -m train.run` for a test, with SIGTERM sent to this process inside its stop-flag
gathering after step `$LATE_SIGNAL_STEP` (unset: none): the signal is handled after the process gave
its flag, so the gathering says "go on" to every process, and this process's own flag is set.
The moment of the race a signal from outside hits only now and then, made certain."""

import os
import runpy
import signal
import sys

import train.distributed as distributed


def main() -> None:
    late = os.environ.get("LATE_SIGNAL_STEP")
    gathered = original = distributed.any_process
    if late is not None:
        calls = []

        def gathered(flag: bool) -> bool:  # called once after every step
            calls.append(flag)
            if len(calls) == int(late):
                os.kill(os.getpid(), signal.SIGTERM)
            return original(flag)

    distributed.any_process = gathered
    sys.argv = ["train.run", *sys.argv[1:]]
    runpy.run_module("train.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
