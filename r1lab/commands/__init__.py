"""Thin CLI wrappers, one module per subcommand (each: add_arguments(parser), main(args) -> int)."""
