"""The ``cnnlens`` command: one subcommand per job, errors as one line.

Each capability adds its subcommand in its own module under
:mod:`cnnlens.commands`; this module only assembles them and turns a
:class:`~cnnlens.errors.CnnlensError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from .errors import CnnlensError

app = typer.Typer(
    name="cnnlens",
    help="Look inside convolutional networks: explain, evaluate and analyse CNN classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; a cnnlens error becomes ``error: ...`` and exit 2."""
    _register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except CnnlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors come as ClickException
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def command_names() -> list[str]:
    """Names of every registered subcommand."""
    _register_commands()
    return [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


if __name__ == "__main__":
    raise SystemExit(main())
