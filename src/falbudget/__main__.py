"""``python -m falbudget``: the same as the ``falbudget`` command."""

from falbudget.cli import run

if __name__ == "__main__":
    run()
