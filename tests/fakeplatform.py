"""A local fake of fal's Platform API model endpoints, for `falbudget pricing sync` and the
shared client (falbudget.platform). It is the fake billing API (tests/fakebilling.py, whose
billing events it still serves) plus, as fal documents them
(https://docs.fal.ai/platform-apis/v1/models, .../models/pricing, .../models/pricing/estimate):

* ``GET /v1/models``: list mode (every model, ``models_page`` a page), find mode
  (``endpoint_id`` repeated or comma-separated, 1 to 50, else 400), ``expand=openapi-3.0``
  adds each model's ``openapi``; ``{"models": [...], "next_cursor", "has_more"}``;
* ``GET /v1/models/pricing?endpoint_id=...`` (1 to 50 ids, else 400):
  ``{"prices": [{"endpoint_id", "unit_price", "unit", "currency"}], "next_cursor",
  "has_more"}``, ``prices_page`` records a page;
* ``POST /v1/models/pricing/estimate`` (``unit_price`` estimates).

Every answer carries fields the client does not know (``x_unknown``), as fal may add some. The
knobs of FakeBilling (fail, delay, raw_answer, drip_s, redirect_to) apply to these paths too.
"""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakebilling import EVENTS_PATH, FakeBilling, Recorded, _Handler, cursor_for

MODELS_PATH = "/v1/models"
PRICING_PATH = "/v1/models/pricing"
ESTIMATE_PATH = "/v1/models/pricing/estimate"
USAGE_PATH = "/v1/models/usage"

SIZE_PRESETS = [
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
]


def openapi_for(
    endpoint_id: str, properties: dict[str, Any], required: list[str] | None = None
) -> dict[str, Any]:
    """An OpenAPI 3.0 document laid out as fal's catalog gives one: the input schema behind a
    $ref from the POST's request body, enums and the image size as components."""
    return {
        "openapi": "3.0.4",
        "info": {"title": endpoint_id, "version": "1.0.0", "x-fal-metadata": {"unknown": 1}},
        "paths": {
            f"/{endpoint_id}": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Input"}}
                        },
                    },
                    "responses": {"200": {"description": "queued"}},
                }
            },
            f"/{endpoint_id}/requests/{{request_id}}": {"get": {"responses": {}}},
        },
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "properties": properties,
                    "required": list(required or ["prompt"]),
                    "x-fal-order-properties": list(properties),
                },
                "ImageSize": {
                    "type": "object",
                    "properties": {
                        "width": {"type": "integer", "default": 512},
                        "height": {"type": "integer", "default": 512},
                    },
                },
            }
        },
    }


PROMPT = {"type": "string", "title": "Prompt"}
IMAGE_SIZE = {
    "anyOf": [
        {"$ref": "#/components/schemas/ImageSize"},
        {"type": "string", "enum": SIZE_PRESETS},
    ],
    "default": "landscape_4_3",
}
NUM_IMAGES = {"type": "integer", "minimum": 1, "maximum": 4, "default": 1}


class FakePlatform(FakeBilling):
    """Knobs besides FakeBilling's: ``catalog`` (model records, each with ``endpoint_id`` and
    optionally ``openapi`` and ``metadata``), ``prices`` (endpoint id -> price record without
    the id), ``models_page``, ``prices_page``."""

    name = "fakeplatform"

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.catalog: list[dict[str, Any]] = []
            self.prices: dict[str, dict[str, Any]] = {}
            self.models_page = 100
            self.prices_page = 50

    def add(
        self,
        endpoint_id: str,
        unit_price: str,
        unit: str,
        properties: dict[str, Any] | None = None,
        required: list[str] | None = None,
        *,
        currency: str = "USD",
    ) -> None:
        """An endpoint in the catalog, with its price and (when given) its input schema."""
        record: dict[str, Any] = {
            "endpoint_id": endpoint_id,
            "metadata": {"display_name": endpoint_id.rsplit("/", 1)[-1], "category": "x"},
        }
        if properties is not None:
            record["openapi"] = openapi_for(endpoint_id, properties, required)
        self.catalog.append(record)
        self.prices[endpoint_id] = {"unit_price": unit_price, "unit": unit, "currency": currency}

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # -- serving ------------------------------------------------------------------------------
    def _dispatch(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        if parts.path == EVENTS_PATH or parts.path not in (
            MODELS_PATH,
            PRICING_PATH,
            ESTIMATE_PATH,
            USAGE_PATH,
        ):
            super()._dispatch(handler)
            return
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self._requests.append(Recorded(handler.command, parts.path, query, headers))
            delay, wake = self._delay, self._wake
            failure = self._failures[0] if self._failures else None
            redirect, drip, raw = self.redirect_to, self.drip_s, self.raw_answer
            if failure is not None and failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.pop(0)
        if delay:
            wake.wait(timeout=30)
        if redirect is not None:
            handler.send_json(302, {"detail": "moved"}, {"Location": redirect})
            return
        auth = headers.get("authorization", "")
        if auth != f"Key {self.key}":
            handler.send_json(401, {"detail": "Invalid API key"})
            return
        if failure is not None:
            handler.send_json(failure.status, failure.body, failure.headers)
            return
        if raw is not None:
            handler.send_json(200, raw.decode(), drip_s=drip)
            return
        if parts.path == ESTIMATE_PATH:
            self._estimate(handler, body)
            return
        if parts.path == USAGE_PATH:  # an answer of the documented kind, echoing the filters
            handler.send_json(
                200,
                '{"summary": [{"endpoint_id": "fal-ai/flux/dev", "quantity": 3, "unit":'
                ' "megapixels", "unit_price": 0.025, "cost": 0.075}], "x_unknown": 1, "query": '
                + json.dumps(query)
                + "}",
            )
            return
        ids = [e for v in query.get("endpoint_id", []) for e in v.split(",") if e]
        if len(ids) > 50:
            handler.send_json(400, {"detail": f"at most 50 endpoint ids, got {len(ids)}"})
            return
        try:
            page = 1
            if "cursor" in query:
                page = int(base64.b64decode(query["cursor"][0], validate=True).decode())
        except (ValueError, binascii.Error):
            handler.send_json(400, {"detail": "bad cursor"})
            return
        with self._lock:
            catalog = [dict(m) for m in self.catalog]
            prices = dict(self.prices)
            models_page, prices_page = self.models_page, self.prices_page
        if parts.path == PRICING_PATH:
            if not ids:
                handler.send_json(400, {"detail": "endpoint_id is required"})
                return
            items = [
                {"endpoint_id": e, **prices[e], "x_unknown": {"tier": "a"}}
                for e in ids
                if e in prices
            ]
            key, size = "prices", prices_page
        else:
            expand = "openapi-3.0" in [x for v in query.get("expand", []) for x in v.split(",")]
            chosen = [m for m in catalog if not ids or m["endpoint_id"] in ids]
            items = []
            for model in chosen:
                shown = {k: v for k, v in model.items() if k != "openapi"}
                if expand and "openapi" in model:
                    shown["openapi"] = model["openapi"]
                shown["x_unknown"] = [1, 2]
                items.append(shown)
            key, size = "models", models_page
        chunk = items[(page - 1) * size : page * size]
        has_more = page * size < len(items)
        handler.send_json(
            200,
            {
                key: chunk,
                "next_cursor": cursor_for(page + 1) if has_more else None,
                "has_more": has_more,
                "x_unknown": "ignored",
            },
            drip_s=drip,
        )

    def _estimate(self, handler: _Handler, body: bytes) -> None:
        try:
            request = json.loads(body, parse_float=Decimal)
            assert request["estimate_type"] == "unit_price"
            total = Decimal(0)
            for endpoint_id, ask in request["endpoints"].items():
                price = Decimal(self.prices[endpoint_id]["unit_price"])
                total += price * Decimal(str(ask["unit_quantity"]))
        except (ValueError, KeyError, AssertionError, TypeError):
            handler.send_json(400, {"detail": "bad estimate request"})
            return
        text = f'{{"estimate_type": "unit_price", "currency": "USD", "total_cost": {total}}}'
        handler.send_json(200, text)
