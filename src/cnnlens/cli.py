"""The ``cnnlens`` command: one subcommand per job, one error path.

Each capability adds its subcommand in its own module under
:mod:`cnnlens.commands`; this module only assembles them and turns every
failure into a short message, never a traceback (DESIGN.md, "Bad input"):

- a :class:`~cnnlens.errors.CnnlensError` (bad input): ``error: ...``, exit 2;
- a usage error (unknown option, missing value, bad type): typer's usage
  message, exit 2;
- anything else: ``error: <type>: <message>`` in one line, exit 1.

``cnnlens --debug ...`` (or ``CNNLENS_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

import typer

from .errors import CnnlensError, first_line

app = typer.Typer(
    name="cnnlens",
    help="Look inside convolutional networks: explain, evaluate and analyse CNN classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEBUG_ENV = "CNNLENS_DEBUG"
_debug = False  # set by --debug / CNNLENS_DEBUG for the run in progress


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", envvar=DEBUG_ENV, help="show the traceback when a command fails"
    ),
) -> None:
    global _debug
    _debug = debug


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):  # a module without one is part of another command
            module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 unexpected failure, 2 bad input)."""
    global _debug
    _register_commands()
    _debug = False
    try:
        # prog_name: the usage line says "cnnlens" also under `python -m cnnlens.cli`
        code = app(args=argv, prog_name="cnnlens", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: typer's own family (no click here)
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"Error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except CnnlensError as exc:
        if _debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an environment failure, not bad input
        if _debug:
            traceback.print_exc()
        message = first_line(exc)
        hint = "" if _debug else " (cnnlens --debug ... shows the traceback)"
        print(
            f"error: {type(exc).__name__}{': ' if message else ''}{message}{hint}", file=sys.stderr
        )
        return 1
    return code if isinstance(code, int) else 0


def command_names() -> list[str]:
    """Names of every registered subcommand."""
    _register_commands()
    return [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


if __name__ == "__main__":
    raise SystemExit(main())
