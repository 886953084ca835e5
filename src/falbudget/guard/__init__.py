"""The spend guard: caps, holds, the ledger steps and the fal_client wrapper."""

from falbudget.guard.caps import Cap
from falbudget.guard.core import Alert, CapStatus, Decision, Guard, Hold, Reservation

__all__ = ["Alert", "Cap", "CapStatus", "Decision", "Guard", "Hold", "Reservation"]
