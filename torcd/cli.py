"""`torcd`: run the daemon in the foreground."""

from __future__ import annotations

import asyncio
import sys

from torcd import log_config as torc_logging
from torcd.config import from_args
from torcd.errors import TorcError


def main(argv: list[str] | None = None) -> int:
    config = from_args(argv)
    torc_logging.configure(config.log_level, None if config.log_format == "auto" else config.log_format == "json")
    from torcd.daemon import Daemon
    from torcd.services.processes import prepare_to_start_processes

    prepare_to_start_processes(more_descriptors=True)
    try:
        asyncio.run(Daemon(config).run())
    except TorcError as e:
        print(f"torcd: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
