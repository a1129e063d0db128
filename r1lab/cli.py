"""The ``r1lab`` command: one thin subcommand per stage. Each stage lives in its own module; this file only parses.

Every subcommand accepts ``--help``. Config-backed subcommands take ``--key value`` overrides for any field of their
config dataclass (see ``r1lab.config_cli``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name → (module, one-line help). Each module defines add_arguments(parser) and main(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("r1lab.commands.info", "parameters, FLOPs per token and KV-cache bytes of a preset or checkpoint"),
    "demo": ("r1lab.commands.demo", "model demo: build cpu-demo, train a few steps, save, reload, check vs transformers"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1lab",
        description="DeepSeek-V3 architecture and the DeepSeek-R1 training system, end to end.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args._module, "ACCEPTS_OVERRIDES", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
