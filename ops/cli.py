"""The `relay` command's entry point: runs the application and turns every failure into one line on
stderr that starts with `relay:`, and an exit code (listed in `ops.context`).

At first this module imports only the standard library, the exit codes and the error hierarchy: the
application's own imports take seconds on a busy machine, and an interrupt during them must end as quietly
as any other.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ops.context import (
    EXIT_BROKER,
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_STORE,
    EXIT_TRANSIENT,
    EXIT_USAGE,
)
from shared.errors import (
    BrokerUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    RelayError,
    StoreUnavailable,
    TransientError,
)

if TYPE_CHECKING:
    import typer


def exit_code_for(exc: RelayError) -> int:
    if isinstance(exc, BrokerUnavailable):
        return EXIT_BROKER
    if isinstance(exc, StoreUnavailable):
        return EXIT_STORE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConfigError | PermanentError):
        return EXIT_USAGE
    if isinstance(exc, TransientError):
        return EXIT_TRANSIENT
    return EXIT_CHECK_FAILED


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def run(args: Sequence[str] | None = None) -> int:
    """Run `relay ARGS` (default: the process's arguments) and return its exit code."""
    try:
        import typer

        from ops.app import app

        try:
            # Not standalone: Typer would print its own usage errors, several lines in a box.
            result: Any = app(args=args, prog_name="relay", standalone_mode=False)
        except typer.TyperException as exc:  # every parsing and usage error
            return _parse_error(exc)
        except typer.Abort as exc:
            # A prompt answered with Ctrl-C or an end of input: nothing was done.
            if isinstance(exc.__context__, KeyboardInterrupt):
                return EXIT_INTERRUPTED
            print("relay: aborted; nothing was done", file=sys.stderr)
            return EXIT_CHECK_FAILED
        # Without standalone mode an `Exit` (and an interrupt, as `Exit(130)`) comes back as its code.
        return result if isinstance(result, int) else EXIT_OK
    except RelayError as exc:
        print(f"relay: {one_line(str(exc))}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parse_error(exc: typer.TyperException) -> int:
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)  # set on usage errors: the command they are about
    if ctx is not None and message == ctx.get_help():
        # `relay` or a command group without a sub-command: the help is the answer.
        print(message, file=sys.stderr)
        return EXIT_USAGE
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    print(f"relay: {one_line(message)}{hint}", file=sys.stderr)
    return exc.exit_code


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
