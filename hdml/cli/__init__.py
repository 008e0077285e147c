"""The `hdml` command line: one subcommand per workflow step."""
from __future__ import annotations

import logging
import sys
import traceback

from hdml.cli.parser import parser
from hdml.core.errors import ConfigError, Interrupted, TrainingDiverged

EXIT_USAGE = 2  # bad input: config, files, arguments
EXIT_DIVERGED = 3  # NaN/infinite losses: rerunning will not help
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGINT, rerun to resume


def configure_logging(verbosity: int) -> None:
    """-v: hdml's own INFO lines (every evaluation); -vv: every library's too. Libraries stay at
    WARNING otherwise, so faiss's "Could not load library with AVX2 support" (INFO, at import)
    does not open every log."""
    logging.basicConfig(level=logging.INFO if verbosity >= 2 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("hdml").setLevel(logging.INFO if verbosity else logging.NOTSET)  # NOTSET: the root's


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        args.func(args)
    except Interrupted as exc:
        print(f"hdml {args.command}: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        print(f"hdml {args.command}: diverged: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hdml {args.command}: error: {msg}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return EXIT_USAGE
    return 0


