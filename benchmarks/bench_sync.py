"""`falbudget pricing sync` over a fake catalog of 2,000 endpoints: time and HTTP calls, beside
a baseline measured in the same run.

    python benchmarks/bench_sync.py [--endpoints N] [--page N]

The catalog is served by the tests' fake Platform API (tests/fakeplatform.py) on 127.0.0.1: a
mix of per-megapixel, per-image, per-second (from a duration, or from frames and a frame rate),
per-video and after-the-call endpoints, each with
an OpenAPI schema; the list is paged ``--page`` models a page (fal's own default is unknown
here). The sync lists the catalog, asks prices 50 ids a call and schemas 50 ids a call. The
baseline asks the same API one endpoint at a time (a price call and a schema call for each
endpoint, after the same listing): what a client without batching would do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
try:
    import falbudget  # noqa: F401
except ImportError:  # not installed: run from the checkout
    sys.path.insert(0, str(ROOT / "src"))

from fakeplatform import (  # noqa: E402
    IMAGE_SIZE,
    NUM_IMAGES,
    PROMPT,
    FakePlatform,
)
from falbudget import catalog, platform  # noqa: E402

KEY = "bench-id:bench-secret"
KINDS = [
    ("0.025", "megapixels", {"prompt": PROMPT, "image_size": IMAGE_SIZE, "num_images": NUM_IMAGES}),
    ("0.04", "image", {"prompt": PROMPT, "num_images": NUM_IMAGES}),
    (
        "0.09",
        "seconds",
        {"prompt": PROMPT, "duration": {"type": "string", "enum": ["5", "10"], "default": "5"}},
    ),
    (
        "0.08",
        "video seconds",
        {
            "prompt": PROMPT,
            "num_frames": {"type": "integer", "minimum": 81, "maximum": 121, "default": 81},
            "frames_per_second": {"type": "integer", "minimum": 5, "maximum": 24, "default": 16},
        },
    ),
    ("0.5", "video", {"prompt": PROMPT}),
    ("0.00111", "compute seconds", {"prompt": PROMPT}),
]


def fill(fake: FakePlatform, count: int) -> None:
    for n in range(count):
        price, unit, props = KINDS[n % len(KINDS)]
        fake.add(f"bench/model-{n:05d}", price, unit, props)


def run_sync(fake: FakePlatform) -> tuple[float, int, int]:
    before = len(fake.requests)
    started = time.perf_counter()
    with platform.PlatformClient(KEY, base_url=fake.base_url) as client:
        result = catalog.sync(client, ["bench/*"], key_id="bench-id", read_on=dt.date(2026, 12, 6))
        text = catalog.table_yaml(result, dt.date(2026, 12, 6))
    elapsed = time.perf_counter() - started
    assert len(result.written) == len(fake.catalog), "every endpoint written"
    del text
    return elapsed, len(fake.requests) - before, len(result.written)


def run_baseline(fake: FakePlatform) -> tuple[float, int]:
    before = len(fake.requests)
    started = time.perf_counter()
    with platform.PlatformClient(KEY, base_url=fake.base_url) as client:
        ids = [m["endpoint_id"] for m in client.models()]
        for endpoint_id in ids:
            client.prices([endpoint_id])
            client.models(endpoint_ids=[endpoint_id], expand_openapi=True)
    return time.perf_counter() - started, len(fake.requests) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--page", type=int, default=100, help="models a page of the listing")
    args = parser.parse_args()
    with FakePlatform() as fake:
        fake.key = KEY
        fake.models_page = args.page
        fill(fake, args.endpoints)
        seconds, calls, written = run_sync(fake)
        base_seconds, base_calls = run_baseline(fake)
    print(f"catalog: {args.endpoints} endpoints, {args.page} a page of the listing")
    print(f"pricing sync : {seconds:7.2f} s  {calls:5d} HTTP calls  ({written} entries written)")
    print(f"one at a time: {base_seconds:7.2f} s  {base_calls:5d} HTTP calls  (baseline)")
    print(
        f"ratio        : {base_seconds / seconds:7.1f}x faster,"
        f" {base_calls / calls:.1f}x fewer calls"
    )


if __name__ == "__main__":
    main()
