"""User-facing errors: one line that says what is wrong and how to fix it, never a deep traceback.

Library code raises UserError; every script's entry point runs through `run_main`, which prints the
message as a single line and exits with status 1.
"""

import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, unreachable weights): shown as one line."""


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main(); turn a UserError into `error: ...` on stderr and exit status 1."""
    try:
        main()
    except UserError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted")


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
