"""Run in spawned child processes (an importable module, not a test file): open brand-new SQLite
ledgers at the same moment as the other workers, round after round."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_new_files(directory: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    """For each round, wait for every worker, then open ``round-N.db`` (which nobody has created
    yet), write one hold and read it back. Puts (worker, [(round, error)]) on ``results``."""
    from falbudget.ledger import BucketCharge, SQLiteLedger

    failures: list[tuple[int, str]] = []
    for number in range(rounds):
        try:
            barrier.wait(timeout=120)
        except BaseException as exc:
            failures.append((number, f"barrier: {exc!r}"))
            break
        try:
            ledger = SQLiteLedger(Path(directory) / f"round-{number}.db")
            try:
                result = ledger.reserve(
                    hold_id=f"w{worker}",
                    endpoint="fal-ai/magi/image-to-video",
                    amount=1,
                    charges=[BucketCharge("global|total", None)],
                    now=1.0,
                    expires_at=2.0,
                )
                assert result.admitted and ledger.get_hold(f"w{worker}").amount == 1
            finally:
                ledger.close()
        except BaseException as exc:
            failures.append((number, repr(exc)))
    results.put((worker, failures))
