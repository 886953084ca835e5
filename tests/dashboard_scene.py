"""The ledger the dashboard tests read: the eight holds of tests/test_report.py (its docstring
has the table) and, beside them:

    #  created       user project key  request        what happened          counts as
    9  11-23 10:00   dee  alpha   k1   144     1.20   settled                spent 1.20
    #3 (11-21 09:00, 0.60 held and settled) adjusted by reconciliation to 0.90: overrun 0.30
    refused 11-23 17:45: bob asks for 0.80 more (his week cap 1.20 is held by #7): cap_exceeded
    refused 11-23 17:50: an unknown endpoint fal-ai/nope: unknown_endpoint, no cap

and proxy key k1 (tags project=alpha, user=dee). "Now" is 2026-11-23 18:00 UTC (a Monday).

By hand, at now:
    spent  #1 0.80 + #2 1.00 + #3 0.90 + #5 1.60 + #6 0.80 + #9 1.20 = 6.30; held #7 1.20 +
           #8 0.80 = 2.00
    caps   user=bob week 1.20: held 1.20 -> 100.0%, remaining 0.00 (over: at its limit)
           global month 10.00: 6.30 + 2.00 = 8.30 -> 83.0%, remaining 1.70 (near)
           global day 5.00 (11-23): spent #9 1.20, held 2.00 -> 64.0%, remaining 1.80
           project alpha 10.00 (total): spent 0.80 + 1.00 + 1.60 + 1.20 = 4.60, held 1.20
             -> 58.0%, remaining 4.20
           project beta 10.00: spent 0.90, held 0.80 -> 17.0%, remaining 8.30
           project=gamma 5.00: nothing -> 0.0%, remaining 5.00
"""

from __future__ import annotations

import contextlib

from falbudget import Guard
from falbudget.errors import FalbudgetError
from falbudget.ledger import Ledger
from test_report import MAGI, NOW, REQ, Clock, caps, fill, utc

KEY_ID = "k1"


def build(ledger: Ledger) -> tuple[Guard, Clock]:
    clock = Clock(NOW)
    guard = Guard(ledger, caps(), clock=clock, hold_ttl=3600)
    fill(guard, clock)
    clock.now = utc(2026, 11, 23, 10)
    with guard.reserve(MAGI, {**REQ, "num_frames": 144}, user="dee", project="alpha", key=KEY_ID):
        pass
    third = next(h for h in ledger.holds() if h.created_at == utc(2026, 11, 21, 9))
    ledger.adjust(third.id, 900_000, now=NOW, reason="billed 0.90", source="billing.csv")
    clock.now = utc(2026, 11, 23, 17, 45)
    with contextlib.suppress(FalbudgetError):
        guard.reserve(MAGI, REQ, user="bob", project="alpha").acquire()
    clock.now = utc(2026, 11, 23, 17, 50)
    with contextlib.suppress(FalbudgetError):
        guard.reserve("fal-ai/nope", {}, user="ann").acquire()
    ledger.create_key(KEY_ID, "0" * 64, {"project": "alpha", "user": "dee"}, now=NOW)
    clock.now = NOW
    return guard, clock
