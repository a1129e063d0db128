"""The ``r1lab`` command: one thin subcommand per stage. Each stage lives in its own module; this file only parses.

Every subcommand accepts ``--help``. Config-backed subcommands take ``--key value`` overrides for any field of their
config dataclass (see ``r1lab.config_cli``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys


def subcommands() -> dict[str, str]:
    """name → module, discovered in r1lab/commands/: each module defines NAME, HELP, add_arguments(parser) and
    main(args) -> int (and ACCEPTS_OVERRIDES = True if it takes ``--key value`` config overrides)."""
    import pkgutil

    import r1lab.commands as pkg

    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        module = f"r1lab.commands.{info.name}"
        name = getattr(importlib.import_module(module), "NAME", None)
        if name:
            found[name] = module
    return dict(sorted(found.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1lab",
        description="DeepSeek-V3 architecture and the DeepSeek-R1 training system, end to end.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in subcommands().items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.add_argument("--workers", default=None, metavar="N|auto",
                       help="CPU generation processes (default auto: one per core; 1 = this process only); "
                       "the same as R1LAB_WORKERS (r1lab/engine/workers.py)")
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
    from r1lab.allocator import keep_freed_memory

    keep_freed_memory()  # ~3-10 % faster CPU training steps (r1lab/allocator.py)
    # CPU generation in helper processes, one per core (r1lab/engine/workers.py: ~1.5x on 2 cores); library use of
    # the engine stays single-process unless asked
    try:
        if args.workers is not None:
            if not (args.workers == "auto" or args.workers.isdigit() and int(args.workers) > 0):
                raise ValueError(f"--workers must be a positive integer or 'auto', got {args.workers!r}")
            os.environ["R1LAB_WORKERS"] = args.workers
        os.environ.setdefault("R1LAB_WORKERS", "auto")
        return int(args._module.main(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:
        # Bad input (config, overrides, corpus file:line, checkpoint mismatch, an output path that is a file, an
        # unreadable file) → one clear line, exit 2.
        # Set R1LAB_DEBUG=1 to see the traceback.
        if os.environ.get("R1LAB_DEBUG"):
            raise
        print(f"r1lab {args.command}: error: {err}  (R1LAB_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
