"""The web dashboard of ``falbudget serve`` (and of ``falbudget proxy`` at /dashboard): caps,
spend, holds in flight, overruns, reconciliation, proxy keys, and the JSON API ``/api/v1``.
Needs the ``serve`` extra (Starlette, uvicorn, Jinja2)."""

from falbudget.dashboard.config import DashboardSettings, parse_section

__all__ = ["DashboardSettings", "create_dashboard", "parse_section"]


def __getattr__(name: str) -> object:
    if name == "create_dashboard":
        from falbudget.dashboard.app import create_dashboard

        return create_dashboard
    raise AttributeError(name)
