"""How long a quote takes, beside a hand-written Decimal formula measured in the same run.

    python benchmarks/bench_quote.py [--batch N] [--runs N]

Prints microseconds per ``falbudget.quote()`` for one typical request (timeit, best of several
repeats) and over a batch of varied valid argument dicts, each beside a plain Python function that
checks its inputs (types, ranges, allowed values, unknown names) and does the MAGI-1 arithmetic
with Decimal, and the ratio (goal: <= 3x).
Then the wall time of whole processes (median of several runs): ``falbudget quote`` beside
``python -c "import pydantic, yaml, tabulate"``, ``python -c "import falbudget"`` and an empty
interpreter.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
try:
    import falbudget
except ImportError:  # not installed: run from the checkout
    sys.path.insert(0, str(SRC))
    import falbudget

MAGI = "fal-ai/magi/image-to-video"
PROCESS_GOAL = 1.3
"""The whole `falbudget quote` process against importing pydantic, yaml and tabulate."""
GOAL = 3.0
QUOTE_ONCE = f"import falbudget; falbudget.quote({MAGI!r}, {{'num_frames': 144}})"
TYPICAL: dict[str, Any] = {
    "prompt": "A snowboarder carves through fresh powder under a cerulean sky.",
    "image_url": "https://v3.fal.media/files/kangaroo/maxresdefault.jpg",
    "num_frames": 144,
    "resolution": "480p",
    "num_inference_steps": 32,
}

# ----------------------------------------------------------------------------- the baseline

_BASE = Decimal("0.80")
_PER_SECOND = Decimal("0.20")
_RESOLUTION = {"480p": Decimal("0.5"), "720p": Decimal("1")}
_ONE = Decimal(1)
_SIXTEEN = Decimal(16)
_MICRO = Decimal("0.000001")


_STEPS = frozenset({4, 8, 16, 32, 64})
_RATIOS = frozenset({"auto", "16:9", "9:16", "1:1"})


def _bad(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"fal-ai/magi/image-to-video: {name}={value!r} is not allowed: {allowed}")


def hand_price(arguments: Mapping[str, Any]) -> Decimal:
    """MAGI-1 by hand, checking its inputs as quote() does (each given input's type, range or
    allowed values; no unknown names), with an error naming the field, the value and what is
    allowed; then the arithmetic. No line items, no Quote object."""
    for name, value in arguments.items():
        kind = type(value)
        if name in ("prompt", "image_url"):
            ok = kind is str
        elif name == "num_frames":
            ok = kind is int and 96 <= value <= 192
        elif name == "resolution":
            ok = kind is str and value in _RESOLUTION
        elif name == "num_inference_steps":
            ok = kind is int and value in _STEPS
        elif name == "seed":
            ok = value is None or kind is int
        elif name == "enable_safety_checker":
            ok = kind is bool
        elif name == "aspect_ratio":
            ok = kind is str and value in _RATIOS
        else:
            raise _bad(name, value, "unknown parameter")
        if not ok:
            raise _bad(name, value, "see the endpoint's inputs")
    frames: int = arguments.get("num_frames", 96)
    extra_seconds = -(-(frames - 96) // 24)  # ceil; frames >= 96 so never negative
    resolution = _RESOLUTION[arguments.get("resolution", "720p")]
    steps = Decimal(arguments.get("num_inference_steps", 16)) / _SIXTEEN
    total: Decimal = (_BASE + _PER_SECOND * extra_seconds) * resolution * max(_ONE, steps)
    return total.quantize(_MICRO, rounding=ROUND_CEILING)


# ----------------------------------------------------------------------------- in-process timing


def varied_batch(size: int, seed: int = 2026) -> list[dict[str, Any]]:
    """``size`` valid argument dicts: every priced input varied, some left to their defaults."""
    rng = random.Random(seed)
    batch = []
    for index in range(size):
        arguments: dict[str, Any] = {"prompt": f"scene {index}", "image_url": "https://x/y.jpg"}
        if rng.random() < 0.9:
            arguments["num_frames"] = rng.randint(96, 192)
        if rng.random() < 0.8:
            arguments["resolution"] = rng.choice(["480p", "720p"])
        if rng.random() < 0.8:
            arguments["num_inference_steps"] = rng.choice([4, 8, 16, 32, 64])
        if rng.random() < 0.3:
            arguments["seed"] = rng.randint(0, 2**31)
        if rng.random() < 0.2:
            arguments["aspect_ratio"] = rng.choice(["auto", "16:9", "9:16", "1:1"])
        if rng.random() < 0.2:
            arguments["enable_safety_checker"] = rng.random() < 0.5
        batch.append(arguments)
    return batch


def best_per_call(func: Callable[[], object], number: int, repeat: int) -> float:
    """Microseconds per call: the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def time_batch(price: Callable[[Mapping[str, Any]], object], batch: Sequence[Any]) -> float:
    """Microseconds per item over the whole batch, best of three passes."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for arguments in batch:
            price(arguments)
        best = min(best, time.perf_counter() - start)
    return best / len(batch) * 1e6


# ----------------------------------------------------------------------------- whole processes


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    if Path(falbudget.__file__).resolve().is_relative_to(SRC):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def cli_command() -> list[str]:
    """The installed console script when there is one, else ``python -m falbudget``."""
    beside = Path(sys.executable).with_name("falbudget")
    script = str(beside) if beside.exists() else shutil.which("falbudget")
    return [script] if script else [sys.executable, "-m", "falbudget"]


def median_ms(command: list[str], runs: int, env: dict[str, str]) -> tuple[float | None, str]:
    """Median wall time in ms, or None and the reason when the command does not succeed."""
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if first.returncode != 0:
        lines = (first.stderr or first.stdout).strip().splitlines()
        return None, f"exit {first.returncode}: {lines[-1] if lines else 'no output'}"[:100]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=False)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), ""


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100_000, help="lines in the batch")
    parser.add_argument("--runs", type=int, default=10, help="runs of each process")
    options = parser.parse_args(argv)

    from tabulate import tabulate

    quote = falbudget.quote
    batch = varied_batch(options.batch)
    quote(MAGI, TYPICAL)  # load the table outside the timing
    mismatches = [a for a in batch if quote(MAGI, a).total != hand_price(a)]
    if mismatches or quote(MAGI, TYPICAL).total != Decimal("1.20"):
        print(f"the formula and quote() disagree on {mismatches[:3]}", file=sys.stderr)
        return 1

    single_quote = best_per_call(lambda: quote(MAGI, TYPICAL), number=20_000, repeat=7)
    single_hand = best_per_call(lambda: hand_price(TYPICAL), number=20_000, repeat=7)
    batch_quote = time_batch(lambda a: quote(MAGI, a), batch)
    batch_hand = time_batch(hand_price, batch)

    ratios = [single_quote / single_hand, batch_quote / batch_hand]
    rows = [
        ["single request", single_quote, single_hand, ratios[0]],
        [f"batch of {len(batch):,}", batch_quote, batch_hand, ratios[1]],
    ]
    print(f"falbudget {falbudget.__version__}, Python {sys.version.split()[0]}")
    print()
    print(
        tabulate(
            rows,
            headers=["quote()", "us/quote", "hand formula us", "ratio"],
            floatfmt=("", ".2f", ".2f", ".1f"),
        )
    )
    worst = max(ratios)
    verdict = "within" if worst <= GOAL else "OVER"
    print(f"\nworst ratio {worst:.1f}x: {verdict} the {GOAL:.0f}x goal")

    env = child_env()
    python = sys.executable
    processes = [
        ("python -c pass", [python, "-c", "pass"]),
        (
            'python -c "import pydantic, yaml, tabulate"',
            [python, "-c", "import pydantic, yaml, tabulate"],
        ),
        ('python -c "import falbudget"', [python, "-c", "import falbudget"]),
        ('python -c "falbudget.quote(...)" (144 frames)', [python, "-c", QUOTE_ONCE]),
        ("falbudget quote ... num_frames=144", [*cli_command(), "quote", MAGI, "num_frames=144"]),
    ]
    process_rows = []
    medians: dict[str, float | None] = {}
    for label, command in processes:
        ms, problem = median_ms(command, options.runs, env)
        medians[label] = ms
        process_rows.append([label, "-" if ms is None else f"{ms:.1f}", problem])
    print()
    cli = " ".join(cli_command())
    print(f"whole processes, median of {options.runs} runs (the CLI: {cli})")
    print(tabulate(process_rows, headers=["process", "ms", "note"], disable_numparse=True))
    cli_ms, base_ms = medians[processes[-1][0]], medians[processes[1][0]]
    if cli_ms is not None and base_ms:
        ratio = cli_ms / base_ms
        met = "met" if ratio <= PROCESS_GOAL else "missed"
        print(
            f"\nfalbudget quote {cli_ms:.1f} ms against {processes[1][0]} {base_ms:.1f} ms:"
            f" {ratio:.2f}x, goal at most {PROCESS_GOAL}x: {met}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
