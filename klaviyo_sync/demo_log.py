"""A sample business-system log: the six synced event types among everyday noise.

Used by `klaviyo-sync demo`. Written the way logrotate leaves a log: `system.log.2.gz`
(oldest, compressed), `system.log.1`, then the live `system.log`.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

_NOISE = (
    "user.login customer={cid} ip=10.0.{a}.{b}",
    "page.view customer={cid} path=/boxes/{box}",
    "cron.run job=billing duration_ms={a}{b}",
    "api.request method=GET path=/v1/schedules status=200",
    "box.packed box={box} warehouse=leeds",
)


@dataclass(frozen=True)
class DemoCustomer:
    id: str
    email: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class SampleLog:
    files: tuple[Path, ...]  # oldest first
    lines: int
    event_lines: int
    malformed_lines: int


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _event_line(rng: random.Random, when: datetime, c: DemoCustomer) -> str:
    stamp = when.strftime("%Y-%m-%d %H:%M:%S")
    kind = rng.choice(("started.signup", "cancelled", "contact.form", "failed.payment",
                       "referral.credit", "shipping.email"))
    who = f"customer={c.id} email={c.email}"
    if kind == "started.signup":
        rest = (f"{who} first_name={c.first_name} last_name={c.last_name} "
                f"box={rng.choice((705, 706, 712))} value={rng.choice(('47.95', '39.00'))}")
    elif kind == "cancelled":
        rest = f"{who} reason={_q(rng.choice(('moving away', 'too expensive', 'too much food')))}"
    elif kind == "contact.form":
        message = _q('Can I move my box to "Friday"?')
        rest = (f"email={c.email} name={_q(c.first_name + ' ' + c.last_name)} "
                f"subject={_q('Delivery day')} message={message}")
    elif kind == "failed.payment":
        rest = f"{who} amount=47.95 order=A{rng.randint(10000, 99999)} reason=card_declined"
    elif kind == "referral.credit":
        rest = f"{who} amount=10.00 referred_customer={rng.randint(2000, 2999)}"
    else:
        rest = (f"{who} order=A{rng.randint(10000, 99999)} tracking=1Z{rng.randint(10**8, 10**9)}"
                f" carrier=UPS")
    return f"{stamp} {kind} {rest}"


def _lines(rng: random.Random, start: datetime, count: int,
           customers: Sequence[DemoCustomer]) -> Iterator[tuple[datetime, str, str]]:
    when = start
    for _ in range(count):
        when += timedelta(seconds=rng.randint(1, 90))
        c = rng.choice(customers)
        roll = rng.random()
        if roll < 0.35:
            yield when, "event", _event_line(rng, when, c)
        elif roll < 0.36:
            # A line of a synced type that cannot be parsed: kept as a reject, not lost.
            yield when, "malformed", (f"{when:%Y-%m-%d %H:%M:%S} cancelled customer={c.id} "
                                      'reason="unterminated')
        else:
            noise = rng.choice(_NOISE).format(cid=c.id, a=rng.randint(0, 9), b=rng.randint(0, 9),
                                              box=rng.choice((705, 706, 712)))
            yield when, "noise", f"{when:%Y-%m-%d %H:%M:%S} {noise}"


def signup_line(when: datetime, customer: DemoCustomer, box: int = 705) -> str:
    """A `started.signup` line for ``customer`` at local time ``when``."""
    return (f"{when:%Y-%m-%d %H:%M:%S} started.signup customer={customer.id} "
            f"email={customer.email} first_name={customer.first_name} "
            f"last_name={customer.last_name} box={box} value=47.95")


def write_sample_log(folder: Path, customers: Sequence[DemoCustomer], end: datetime,
                     lines_per_file: int = 200, seed: int = 7,
                     signups: Sequence[tuple[datetime, DemoCustomer]] = ()) -> SampleLog:
    """Write system.log.2.gz, system.log.1 and system.log ending shortly before ``end``.

    ``signups`` are extra started.signup lines (time, customer) merged in time order, so
    that a generated business database's missed-signup answer holds for the log too.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = end - timedelta(seconds=90 * lines_per_file * 3 + 3600)
    generated = list(_lines(rng, start, lines_per_file * 3, customers))
    generated += [(when, "event", signup_line(when, c)) for when, c in signups]
    generated.sort(key=lambda item: item[0])
    third = -(-len(generated) // 3)
    chunks = [generated[i * third:(i + 1) * third] for i in range(3)]
    oldest, middle, live = (folder / "system.log.2.gz", folder / "system.log.1",
                            folder / "system.log")
    with gzip.open(oldest, "wt", encoding="utf-8", newline="\n") as fh:
        fh.writelines(line + "\n" for _, _, line in chunks[0])
    for path, chunk in ((middle, chunks[1]), (live, chunks[2])):
        path.write_text("".join(line + "\n" for _, _, line in chunk), encoding="utf-8")
    return SampleLog(
        files=(oldest, middle, live),
        lines=len(generated),
        event_lines=sum(1 for _, kind, _ in generated if kind == "event"),
        malformed_lines=sum(1 for _, kind, _ in generated if kind == "malformed"),
    )
