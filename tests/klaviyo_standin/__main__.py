"""Run the stand-in as a process of its own, for benchmarks and manual trials.

    python -m tests.klaviyo_standin [--port 0] [--no-limits] [--latency 0.05] ...

Prints the base URL on the first line, serves until SIGTERM or Ctrl-C, then prints the
counts of :meth:`KlaviyoStandIn.stats` as one JSON line. While it runs, the same counts
are at ``GET <base URL>/_standin/stats``. In a separate process the stand-in does not
share a GIL with the sender it measures.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import threading
from types import FrameType

from tests.klaviyo_standin.server import KlaviyoStandIn


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.klaviyo_standin")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--api-key", action="append", dest="api_keys",
                        help="accepted private key (repeatable; default pk_test_standin)")
    parser.add_argument("--oauth-client", action="append", default=[],
                        metavar="ID:SECRET", help="accepted OAuth client (repeatable)")
    parser.add_argument("--no-limits", action="store_true", help="no 429s, no RateLimit-*")
    parser.add_argument("--window-scale", type=float, default=1.0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of 500s")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    clients = dict(client.split(":", 1) for client in args.oauth_client)
    standin = KlaviyoStandIn(args.api_keys or ["pk_test_standin"],
                             enforce_limits=not args.no_limits,
                             window_scale=args.window_scale, latency_s=args.latency,
                             seed=args.seed, oauth_clients=clients, port=args.port)
    if args.fail_rate:
        standin.faults.fail_rate(args.fail_rate)
    # The account only grows (profiles, events, requests) and holds no cycles of note:
    # the collector's full passes over millions of its dicts cost more than half of
    # parsing a 10,000-profile request. Collect rarely, and never what is already kept.
    gc.set_threshold(100_000, 50, 100)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(standin.start(), flush=True)
    while not stopping.wait(0.5):
        gc.freeze()
    standin.stop()
    print(json.dumps(standin.stats()), flush=True)


if __name__ == "__main__":
    main()
