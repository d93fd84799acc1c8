"""The `countnet` command: built-in subcommands plus plug-ins from the `countnet.commands` group.

Commands that need Ray (search, export) live in the `tune` package and plug in through entry
points, so `countnet` itself never imports Ray and runs where only torch is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points

from countnet import __version__
from countnet.config import ConfigError
from countnet.errors import DataError, UncheckedWarning
from countnet.runtime import set_omp_env

BUILTIN_COMMANDS = ("generate", "train", "predict", "evaluate", "diagnose", "overfit_check",
                    "report")
ENTRY_POINT_GROUP = "countnet.commands"
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="countnet", description="Count objects in images with a CNN: train, search, "
        "diagnose why the train loss sits above the val loss, and predict.")
    parser.add_argument("--version", action="version", version=f"countnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in BUILTIN_COMMANDS:
        importlib.import_module(f"countnet.cli.{name}").register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def check_device(device: str, flag: str) -> None:
    """Refuse `cuda` up front on a machine without it, naming the flag that asked for it."""
    if device == "cuda":
        import torch  # here: `countnet --help` need not import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{flag}: CUDA is not available on this machine (torch "
                              f"{torch.__version__} sees no GPU); use auto or cpu")


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Within: an UncheckedWarning (a file loaded without an integrity check) prints as one
    `countnet COMMAND: warning: ...` line on stderr, like the command's other messages; Python's
    own format adds the file, line and source of the `warn` call. Other warnings keep it.

    Args:
        command: the subcommand, for the prefix.
    """
    original = warnings.formatwarning

    def formatwarning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
        if issubclass(category, UncheckedWarning):
            return f"countnet {command}: warning: {' '.join(str(message).split())}\n"
        return original(message, category, filename, lineno, line)

    # catch_warnings also forgets which warnings were shown: each call of main says them anew.
    with warnings.catch_warnings():
        warnings.formatwarning = formatwarning
        try:
            yield
        finally:
            warnings.formatwarning = original


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input (config, data, files) -> one line on stderr, exit 2.

    Args:
        argv: the arguments after `countnet`; None takes sys.argv's.

    Returns:
        The exit status.
    """
    # First: OpenMP reads OMP_WAIT_POLICY when torch loads, and build_parser imports the
    # subcommands, which import torch. This module's own imports load no torch (a test checks).
    set_omp_env()
    args = build_parser().parse_args(argv)
    with one_line_warnings(args.command):
        try:
            return int(args.func(args) or 0)
        except (ConfigError, DataError, FileNotFoundError) as e:
            # One line, always: a message may quote a file's text or an OS error with newlines.
            print(f"countnet {args.command}: error: {' '.join(str(e).split())}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        except BrokenPipeError:  # `countnet predict ... | head`: the reader left; not an error
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print(f"countnet {args.command}: interrupted", file=sys.stderr)
            return 130
