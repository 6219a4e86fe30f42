"""`python -m train.run` for a test, with a fault injected in this process's gathering of the
processes' stop flags, which follows every step:

- `LATE_SIGNAL_STEP=n`: SIGTERM to this process inside the gathering after step n, handled after
  it gave its flag: the gathering tells every process to go on while this process's own flag is
  set. The moment of the race that a signal from outside hits only now and then, made certain.
- `FAIL_STEP=n`: a `RuntimeError` in this process alone, in its n-th gathering (after the n-th
  step this process takes; a bug, a full disk...), while the other processes wait there for it.
"""

import os
import runpy
import signal
import sys

import train.distributed as distributed


def main() -> None:
    late, fail = os.environ.get("LATE_SIGNAL_STEP"), os.environ.get("FAIL_STEP")
    original, calls = distributed.any_process, []

    def gathered(flag: bool) -> bool:  # called once after every step
        calls.append(flag)
        if late is not None and len(calls) == int(late):  # (the n-th step of a run that starts at 0)
            os.kill(os.getpid(), signal.SIGTERM)
        if fail is not None and len(calls) == int(fail):
            raise RuntimeError(f"a fault injected after step {fail}")
        return original(flag)

    distributed.any_process = gathered
    sys.argv = ["train.run", *sys.argv[1:]]
    runpy.run_module("train.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
