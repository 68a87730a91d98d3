"""The `mirror` command: subcommands, their flags, logging set-up and exit codes.

Turns argv and the environment into Settings and hands them to the app; it holds
no policy. Exit codes: 0 success, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from mirror.cachecli import add_cache_commands
from mirror.cliconfig import describe, settings_or_report
from mirror.config import Overrides, Settings
from mirror.logs import configure_logging

EXIT_OK = 0
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    """Run the command line in `argv` (default: `sys.argv[1:]`) and return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.run
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirror", description="A pull-through caching mirror for container registries."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the mirror")
    serve.set_defaults(run=_serve)
    check = commands.add_parser(
        "check-config", help="validate a config and print the effective settings"
    )
    check.set_defaults(run=_check_config)
    for command in (serve, check):
        _add_settings_flags(command)
    add_cache_commands(commands)
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", metavar="FILE", type=Path, help="YAML config file (env MIRROR_CONFIG)"
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="address (env MIRROR_LISTEN)")
    parser.add_argument(
        "--upstream", metavar="URL", help="URL of the default upstream (env MIRROR_UPSTREAM)"
    )
    parser.add_argument(
        "--storage", metavar="PATH", help="cache directory (env MIRROR_STORAGE_PATH)"
    )
    parser.add_argument(
        "--max-size", metavar="SIZE", help="cache quota, e.g. 20GiB (env MIRROR_MAX_SIZE)"
    )


def _settings(args: argparse.Namespace) -> Settings | None:
    """Settings from the flags, environment and config file; None once problems are printed."""
    overrides = Overrides(
        listen=args.listen, upstream=args.upstream, storage=args.storage, max_size=args.max_size
    )
    return settings_or_report(args.config, overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    configure_logging(settings.log)
    from mirror.app import run  # deferred: check-config must not import the server stack

    run(settings)
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    sys.stdout.write(describe(settings))
    return EXIT_OK
