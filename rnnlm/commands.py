"""The command registry behind ``rnnlm <command>`` and ``rnnlm benchmark <name>``: one of each
level, one implementation.

::

    commands = Commands()

    @commands("evaluate", add_evaluate_args)   # add_args(parser) declares the options
    def cmd_evaluate(args) -> int: ...         # its docstring's first line is the help line

    commands.add_parsers(parser, dest="command", handler_key="handler")
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]
AddArgs = Callable[[argparse.ArgumentParser], None]


class Commands:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[AddArgs, Handler]] = {}

    def __call__(self, name: str, add_args: AddArgs) -> Callable[[Handler], Handler]:
        """Register the decorated handler as ``name``."""

        def register(handler: Handler) -> Handler:
            self.entries[name] = (add_args, handler)
            return handler

        return register

    @classmethod
    def joined(cls, *parts: Commands) -> Commands:
        """One registry holding the commands of ``parts``, in order (a name may appear once)."""
        joined = cls()
        for part in parts:
            for name, entry in part.entries.items():
                if name in joined.entries:
                    raise ValueError(f"command {name!r} is registered twice")
                joined.entries[name] = entry
        return joined

    def add_parsers(
        self, parser: argparse.ArgumentParser, dest: str, handler_key: str, metavar: str | None = None
    ) -> None:
        """One sub-parser per registered command; the chosen handler lands in ``args.<handler_key>``."""
        sub = parser.add_subparsers(dest=dest, required=True, metavar=metavar)
        for name, (add_args, handler) in self.entries.items():
            summary = (handler.__doc__ or "").strip().split("\n")[0]
            p = sub.add_parser(name, help=summary, description=summary)
            add_args(p)
            p.set_defaults(**{handler_key: handler})
