"""``python -m pilot_agent`` (and ``python3 pilot.pyz``): a pilot as a batch system starts it.

No click, no SQL: only what the pilot itself imports, so that the pilot
bundle (``pandamq pilot-bundle``) runs with nothing but python3. Settings
come from ``PANDAMQ_*`` variables (and ``PANDAMQ_CONFIG``), as for every
pandamq process.
"""

from __future__ import annotations

import argparse
import sys

from broker.errors import BadInput, PandaMQError
from broker.observability import logs
from broker.settings import Settings
from broker.stopping import stop_on_signals
from pilot_agent.agent import Pilot, Slot

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilot", description="Run a pandamq pilot for a site.")
    parser.add_argument("--site", required=True, help="the site whose jobs this pilot runs")
    parser.add_argument("--cores", type=int, default=1, help="cores of the slot")
    parser.add_argument("--memory", dest="memory_mb", type=int, default=2000, help="MB of the slot")
    parser.add_argument("--max-jobs", type=int, default=None, help="leave after this many jobs")
    parser.add_argument("--max-idle", type=float, default=None, help="leave after s without a job")
    parser.add_argument("--pilot-id", default=None, help="the pilot's name (a factory gives it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one pilot until it leaves; the exit code."""
    args = _arguments().parse_args(argv)
    try:
        settings = Settings.load()
        logs.setup(settings.log_level, settings.log_format)
        slot = Slot(args.site, args.cores, args.memory_mb)
        agent = Pilot(settings, slot, args.max_jobs, args.pilot_id, args.max_idle)
        ran = agent.run(stop_on_signals())
    except PandaMQError as exc:
        print(f"pilot: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, BadInput) else EXIT_FAILED
    print(f"pilot {agent.pilot_id} ran {ran} job(s)")
    if not agent.connected:
        print("pilot: error: never reached the message broker", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
