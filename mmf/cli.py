"""How every command line of the project reports failure: a one-line message, never a traceback.

    exit 0  done                        exit 2  usage error: a bad option, value or input file
    exit 1  the run itself failed       (NaN loss, NaN logits, a full disk, a mismatch found)

`--debug` anywhere on a command line re-raises instead, with the full traceback.
"""
from __future__ import annotations

import sys

# A mistake in what the user asked for: wrong option values, files that are missing, are
# directories or are not what they claim to be (CheckpointError and the data cache's errors are
# ValueErrors).
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                ImportError)                     # an optional package the chosen option needs
# The work was started and could not be finished (numerics, the machine).
RUN_ERRORS = (ArithmeticError, OSError, MemoryError)


def run(main, argv: list[str] | None, prog: str) -> int:
    """Call main(argv) (argv without --debug) and turn the errors above into messages + exit codes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USAGE_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except RUN_ERRORS as e:
        if debug:
            raise
        print(f"{prog}: failed: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1
