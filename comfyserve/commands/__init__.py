"""One module per ``comfyserve`` subcommand; each exposes ``add_parser(subparsers)``."""
