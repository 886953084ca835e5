"""Exactness through the proxy: `falbudget proxy --workers 2` (a subprocess, two uvicorn worker
processes sharing one ledger) in front of the fake fal server; 200 submits at once from 200
connections against a cap that admits exactly N: exactly N reach fal, the rest get 402.

MAGI defaults = 0.80 (DESIGN.md section 1); a cap of 8.00 admits 10, one of 32.00 admits 40.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml

from fakefal import FakeFal
from falbudget.ledger import open_ledger
from ledger_backends import PROCESS_BACKENDS, backend_params, store_url
from proxyserver import FAL_KEY, QUEUE, cli_proxy, target_headers, upstreams

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
ATTEMPTS = 200


async def _burst(url: str, attempts: int) -> list[int]:
    limits = httpx.Limits(max_connections=attempts, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        body = json.dumps(ARGS).encode()
        headers = target_headers(f"{QUEUE}/{MAGI}")
        answers = await asyncio.gather(
            *(client.post(url, content=body, headers=headers) for _ in range(attempts))
        )
    return [a.status_code for a in answers]


@pytest.mark.slow
@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
@pytest.mark.parametrize(("limit", "admitted"), [("8.00", 10), ("32.00", 40)])
def test_two_workers_admit_exactly_what_the_cap_allows(
    kind: str, limit: str, admitted: int, tmp_path: Path, fake_fal: FakeFal
) -> None:
    url = store_url(kind, tmp_path)
    config = tmp_path / "falbudget.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ledger": url,
                "caps": [{"limit": limit}],
                "proxy": {
                    "upstreams": upstreams(fake_fal),
                    "anonymous": True,
                    "follow_interval": 3600,  # the holds stay submitted: counted exactly below
                },
            }
        )
    )
    with cli_proxy(str(config), 2, {"FAL_KEY": FAL_KEY}) as proxy_url:
        statuses = asyncio.run(_burst(proxy_url, ATTEMPTS))
    assert sorted(set(statuses)) == [200, 402], {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(200) == admitted
    assert statuses.count(402) == ATTEMPTS - admitted
    assert fake_fal.count("submit") == admitted
    ledger = open_ledger(url)
    try:
        holds = ledger.holds()
        assert len(holds) == admitted
        assert {h.state for h in holds} == {"submitted"}
        assert sum(h.amount for h in holds) == admitted * 800_000
    finally:
        ledger.close()
