"""`falbudget pricing sync` against the local fake of fal's Platform API (tests/fakeplatform.py):
every unit kind translated into rules that reproduce unit price x quantity (worked out by hand
here, never by the engine), pagination and 50-id batches counted, retries, --check, bad input.
"Now" is fixed with FALBUDGET_NOW; waits between retries are recorded, never slept."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fakebilling import ADMIN_KEY
from fakeplatform import (
    IMAGE_SIZE,
    MODELS_PATH,
    NUM_IMAGES,
    PRICING_PATH,
    PROMPT,
    FakePlatform,
)
from falbudget import catalog
from falbudget.cli.app import main
from falbudget.errors import InvalidArguments
from falbudget.pricing.loader import load_table, parse_table

FLUX = "fal-ai/flux/dev"
RECRAFT = "fal-ai/recraft/v3/text-to-image"
KLING = "fal-ai/kling-video/v2.1/pro/image-to-video"
LTX = "fal-ai/ltx-video-13b/text-to-video"
VEO = "fal-ai/veo3"
LLM = "fal-ai/any-llm"
GPU = "fal-ai/custom-app"
READ_ON = "2026-12-06"

DURATION_ENUM = {"type": "string", "enum": ["5", "10"], "default": "5"}
DURATION_INT = {"type": "integer", "minimum": 1, "maximum": 20, "default": 6}


def populate(fake: FakePlatform) -> None:
    fake.add(
        FLUX,
        "0.025",
        "megapixels",
        {
            "prompt": PROMPT,
            "image_size": IMAGE_SIZE,
            "num_images": NUM_IMAGES,
            "guidance_scale": {"type": "number", "default": 3.5},
            "loras": {"type": "array", "items": {"type": "object"}},
            "seed": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
    )
    fake.add(RECRAFT, "0.04", "image", {"prompt": PROMPT, "num_images": NUM_IMAGES})
    fake.add(
        KLING,
        "0.09",
        "seconds",
        {"prompt": PROMPT, "image_url": {"type": "string"}, "duration": DURATION_ENUM},
        ["prompt", "image_url"],
    )
    fake.add(LTX, "0.02", "video_second", {"prompt": PROMPT, "duration": DURATION_INT})
    fake.add(VEO, "6", "video", {"prompt": PROMPT, "aspect_ratio": {"type": "string"}})
    fake.add(LLM, "0.0000025", "tokens", {"prompt": PROMPT})
    fake.add(GPU, "0.00111", "compute seconds")


@pytest.fixture(scope="module")
def server() -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        yield fake


@pytest.fixture
def fake(server: FakePlatform, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePlatform]:
    server.reset()
    populate(server)
    monkeypatch.setenv("FAL_KEY", f"key-id-42:{ADMIN_KEY}")
    server.key = f"key-id-42:{ADMIN_KEY}"
    monkeypatch.setenv("FALBUDGET_FAL_API_URL", server.base_url)
    monkeypatch.setenv("FALBUDGET_NOW", READ_ON + "T12:00:00Z")
    monkeypatch.delenv("FAL_KEY_ID", raising=False)
    monkeypatch.delenv("FAL_KEY_SECRET", raising=False)
    yield server
    server.reset()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("falbudget.platform._sleep", slept.append)
    return slept


def sync_to(tmp_path: Path, *patterns: str) -> Path:
    out = tmp_path / "fal-sync.yaml"
    assert main(["pricing", "sync", *patterns, "--output", str(out)]) == 0
    return out


def test_every_unit_kind_becomes_rules_or_a_ceiling(
    fake: FakePlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = sync_to(tmp_path, "fal-ai/*")
    said = capsys.readouterr().out
    assert said.splitlines()[0].startswith(
        "5 endpoints priced, 1 need a ceiling, 1 left out, 0 without a price from fal ("
    )
    assert f"  needs a ceiling: {LLM} (a quantity of tokens is known only after the call)" in said
    assert f"  left out: {GPU} (fal's catalog gives no input schema for it)" in said
    table = load_table(out)
    assert sorted(table.endpoints) == sorted([FLUX, RECRAFT, KLING, LTX, VEO, LLM])
    assert [n for n, e in table.endpoints.items() if e.needs_ceiling] == [LLM]
    text = out.read_text()
    assert f"#   {GPU}: 0.00111 USD per compute seconds: fal's catalog gives no input" in text
    llm = yaml.safe_load(text)["endpoints"][LLM]
    assert llm["after_call"] == {
        "description": "a quantity of tokens is known only after the call"
    }  # written without a ceiling: the user sets one
    assert "rules" not in llm
    assert ADMIN_KEY not in text  # the key id is written, never the secret
    document = yaml.safe_load(text)
    flux = document["endpoints"][FLUX]
    assert flux["synced_from"]["key_id"] == "key-id-42"
    assert flux["synced_from"]["unit"] == "megapixels"
    assert flux["synced_from"]["unit_price"] == "0.025"
    assert flux["price_read_on"] == dt.date(2026, 12, 6)
    assert flux["source_url"] == f"{fake.base_url}/models/pricing?endpoint_id={FLUX}"
    assert "rounded up" in flux["synced_from"]["note"]

    # megapixels, by hand: landscape_4_3 is 1024x768 = 786,432 px: 1 megapixel (of 1,048,576
    # px) -> 0.025; square_hd 1024x1024: exactly 1 -> 0.025; 1500x1000 = 1,500,000 px = 1.43 ->
    # 2 megapixels -> 0.05; x3 images -> 0.15
    assert table.quote(FLUX, {}).total == Decimal("0.025")
    assert table.quote(FLUX, {"image_size": "square_hd"}).total == Decimal("0.025")
    big = {"image_size": {"width": 1500, "height": 1000}, "num_images": 3}
    assert table.quote(FLUX, big).total == Decimal("0.15")
    # per image: 0.04 x 4
    assert table.quote(RECRAFT, {"num_images": 4}).total == Decimal("0.16")
    # seconds from a string enum: 0.09 x 10
    assert table.quote(KLING, {"duration": "10"}).total == Decimal("0.9")
    assert table.quote(KLING, {}).total == Decimal("0.45")  # default "5"
    # seconds from an integer: 0.02 x 6 (default) and x 17
    assert table.quote(LTX, {}).total == Decimal("0.12")
    assert table.quote(LTX, {"duration": 17}).total == Decimal("0.34")
    # per video: once per request
    assert table.quote(VEO, {"aspect_ratio": "16:9"}).total == Decimal("6")


def test_inputs_are_checked_as_fal_s_schema_says(fake: FakePlatform, tmp_path: Path) -> None:
    table = load_table(sync_to(tmp_path, FLUX, KLING))
    with pytest.raises(InvalidArguments, match="duration"):
        table.quote(KLING, {"duration": "7"})
    with pytest.raises(InvalidArguments, match=r"image_size.*\{\"width\": W, \"height\": H\}"):
        table.quote(FLUX, {"image_size": {"width": 0, "height": 5}})
    with pytest.raises(InvalidArguments, match="image_size"):
        table.quote(FLUX, {"image_size": "huge"})
    with pytest.raises(InvalidArguments, match="num_images"):
        table.quote(FLUX, {"num_images": 5})
    # unpriced inputs of any JSON shape pass: loras (an array), seed (null)
    assert table.quote(FLUX, {"loras": [{"path": "x"}], "seed": None}).total == Decimal("0.025")


def test_pages_and_batches_of_fifty(fake: FakePlatform, tmp_path: Path) -> None:
    fake.reset()
    fake.key = f"key-id-42:{ADMIN_KEY}"
    for n in range(120):
        fake.add(f"acme/m{n:03d}", "0.01", "image", {"prompt": PROMPT})
    fake.models_page, fake.prices_page = 7, 20
    out = sync_to(tmp_path, "acme/*")
    assert len(load_table(out).endpoints) == 120
    listing = [r for r in fake.calls(MODELS_PATH) if "expand" not in r.query]
    expanded = [r for r in fake.calls(MODELS_PATH) if "expand" in r.query]
    pricing = fake.calls(PRICING_PATH)
    # by hand: the list, 7 a page: ceil(120 / 7) = 18 pages; pricing, 50 ids a call (50, 50,
    # 20), 20 records a page: 3 + 3 + 1 = 7 calls; schemas, 50 ids a call, 7 a page:
    # ceil(50 / 7) + ceil(50 / 7) + ceil(20 / 7) = 8 + 8 + 3 = 19 calls
    assert (len(listing), len(pricing), len(expanded)) == (18, 7, 19)
    assert max(len(r.query["endpoint_id"]) for r in pricing + expanded) == 50
    assert len(fake.requests) == 18 + 7 + 19


def test_rate_limits_and_failures_are_waited_out(
    fake: FakePlatform, tmp_path: Path, waits: list[float]
) -> None:
    fake.fail(429, headers={"Retry-After": "3"}, times=1)
    fake.fail(503, times=1)
    sync_to(tmp_path, FLUX)
    assert waits == [3.0, 1.0]  # as fal asked, then the second backoff step


def test_a_failure_that_lasts_is_one_line_and_exit_2(
    fake: FakePlatform, tmp_path: Path, waits: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail(500)
    out = tmp_path / "t.yaml"
    assert main(["pricing", "sync", FLUX, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "fal's Platform API failed (HTTP 500)" in err and "(4 attempts)" in err
    assert ADMIN_KEY not in err
    assert not out.exists()  # nothing half-written


def test_no_key_and_nothing_priced(
    fake: FakePlatform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "t.yaml"
    assert main(["pricing", "sync", GPU, "--output", str(out)]) == 1
    captured = capsys.readouterr()
    assert "nothing written" in captured.err and not out.exists()
    monkeypatch.delenv("FAL_KEY")
    assert main(["pricing", "sync", FLUX]) == 2
    assert "FAL_KEY is not set: reading fal's prices needs an API key" in capsys.readouterr().err
    assert main(["pricing", "sync", "--check", "a.yaml", "--output", "b.yaml"]) == 2


def test_check_reports_a_rise_with_exit_1(
    fake: FakePlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = sync_to(tmp_path, FLUX, RECRAFT)
    capsys.readouterr()
    assert main(["pricing", "sync", "--check", str(out)]) == 0  # nothing changed
    fake.prices[RECRAFT]["unit_price"] = "0.05"
    assert main(["pricing", "sync", "--check", str(out)]) == 1
    captured = capsys.readouterr()
    assert RECRAFT in captured.out
    assert captured.err.strip()  # the rise, in one line
    fake.prices[RECRAFT]["unit_price"] = "0.03"  # a cut is not a failure
    assert main(["pricing", "sync", "--check", str(out)]) == 0


def test_the_hand_written_magi_rules_load_beside_a_synced_table(
    fake: FakePlatform, tmp_path: Path
) -> None:
    # a synced table is a table like any other: pricing validate reads it
    out = sync_to(tmp_path, FLUX)
    assert main(["pricing", "validate", str(out)]) == 0


# -- property: quote = unit price x quantity, the quantity worked out by hand -------------------
PRESETS = dict(catalog.IMAGE_SIZE_PRESETS)


def _table(unit: str, price: str, properties: dict[str, Any]) -> Any:
    openapi = {
        "paths": {"/x/y": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"type": "object", "properties": properties, "required": ["prompt"]}
        }}}}}},
        "components": {"schemas": {"ImageSize": {"type": "object", "properties": {
            "width": {"type": "integer"}, "height": {"type": "integer"}}}}},
    }  # fmt: skip
    synced = catalog.entry_for(
        "x/y",
        {"unit_price": Decimal(price), "unit": unit, "currency": "USD"},
        openapi,
        api_url="https://api.fal.ai/v1",
        key_id="k",
        read_on=dt.date(2026, 12, 6),
    )
    assert synced.entry is not None, synced.reason
    document = catalog.table_document(catalog.SyncResult(synced=[synced]), dt.date(2026, 12, 6))
    return parse_table(yaml.safe_dump(document, sort_keys=False))


PRICE = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(50), places=6)


@settings(max_examples=40, deadline=None)
@given(price=PRICE, width=st.integers(1, 5000), height=st.integers(1, 5000), n=st.integers(1, 4))
def test_megapixel_quotes_are_price_times_megapixels_rounded_up(
    price: Decimal, width: int, height: int, n: int
) -> None:
    table = _table("megapixels", str(price), {"prompt": PROMPT, "image_size": IMAGE_SIZE,
                                               "num_images": NUM_IMAGES})  # fmt: skip
    megapixels = math.ceil(width * height / (1024 * 1024))
    quote = table.quote("x/y", {"image_size": {"width": width, "height": height}, "num_images": n})
    assert quote.total == price * megapixels * n


@settings(max_examples=40, deadline=None)
@given(price=PRICE, n=st.integers(1, 4))
def test_image_quotes_are_price_times_images(price: Decimal, n: int) -> None:
    table = _table("images", str(price), {"prompt": PROMPT, "num_images": NUM_IMAGES})
    assert table.quote("x/y", {"num_images": n}).total == price * n


@settings(max_examples=40, deadline=None)
@given(price=PRICE, seconds=st.integers(1, 20))
def test_second_quotes_are_price_times_seconds(price: Decimal, seconds: int) -> None:
    table = _table("seconds", str(price), {"prompt": PROMPT, "duration": DURATION_INT})
    assert table.quote("x/y", {"duration": seconds}).total == price * seconds
    enum = {"type": "string", "enum": ["4s", "6s", "8s"], "default": "8s"}
    table = _table("seconds", str(price), {"prompt": PROMPT, "duration": enum})
    assert table.quote("x/y", {"duration": "6s"}).total == price * 6


@settings(max_examples=20, deadline=None)
@given(price=PRICE)
def test_request_quotes_are_the_unit_price(price: Decimal) -> None:
    for unit in ("video", "requests", "audio"):
        assert _table(unit, str(price), {"prompt": PROMPT}).quote("x/y", {}).total == price


def test_units_known_only_after_the_call_get_no_price() -> None:
    for unit in ("compute seconds", "tokens", "minutes", "steps", "characters of output", ""):
        assert catalog.unit_kind(unit) == "after_call", unit
    synced = catalog.entry_for(
        "x/y",
        {"unit_price": Decimal("0.1"), "unit": "seconds", "currency": "USD"},
        None,
        api_url="https://api.fal.ai/v1",
        key_id="k",
        read_on=dt.date(2026, 12, 6),
    )
    assert (synced.entry, synced.reason) == (None, "fal's catalog gives no input schema for it")


# -- seconds from frames and a frame rate -------------------------------------------------------
FRAMES = {"type": "integer", "minimum": 81, "maximum": 121, "default": 81}
FPS = {"type": "integer", "minimum": 5, "maximum": 24, "default": 16}
WAN = "fal-ai/wan-like/text-to-video"


def test_seconds_from_frames_and_frame_rate_end_to_end(fake: FakePlatform, tmp_path: Path) -> None:
    fake.add(
        WAN,
        "0.08",
        "seconds",
        {"prompt": PROMPT, "num_frames": FRAMES, "frames_per_second": FPS},
    )
    table = load_table(sync_to(tmp_path, WAN))
    entry = yaml.safe_load((tmp_path / "fal-sync.yaml").read_text())["endpoints"][WAN]
    assert [r["kind"] for r in entry["rules"]] == ["frames"]
    assert "rounded up" in entry["synced_from"]["note"]  # the reading is written down
    # by hand: the defaults, 81 frames at 16 a second = 5.0625 s, a partial second counted
    # whole: 6 s x 0.08 = 0.48
    assert table.quote(WAN, {}).total == Decimal("0.48")
    # 96 frames at 24 a second = exactly 4 s: 4 x 0.08 = 0.32
    assert table.quote(WAN, {"num_frames": 96, "frames_per_second": 24}).total == Decimal("0.32")
    # 121 frames at 5 a second = 24.2 s -> 25 s: 25 x 0.08 = 2.00
    assert table.quote(WAN, {"num_frames": 121, "frames_per_second": 5}).total == Decimal("2.00")
    with pytest.raises(InvalidArguments, match="frames_per_second"):
        table.quote(WAN, {"frames_per_second": 0})  # below the schema's minimum of 5
    quote = table.quote(WAN, {"num_frames": 100, "frames_per_second": 24})
    assert quote.line_items[0].detail == "100 frames at 24 a second: 5 seconds"  # 4.17 -> 5


def test_frames_without_a_usable_frame_rate_need_a_ceiling() -> None:
    # no frame rate in the schema, or one that may be 0: the seconds are not known, so no price
    for properties in (
        {"prompt": PROMPT, "num_frames": FRAMES},
        {"prompt": PROMPT, "num_frames": FRAMES, "frames_per_second": {**FPS, "minimum": 0}},
        {"prompt": PROMPT, "num_frames": {"type": "integer"}, "frames_per_second": FPS},
    ):
        synced = catalog.entry_for(
            "x/y",
            {"unit_price": Decimal("0.1"), "unit": "seconds", "currency": "USD"},
            {"paths": {"/x/y": {"post": {"requestBody": {"content": {"application/json": {
                "schema": {"type": "object", "properties": properties}}}}}}}},
            api_url="https://api.fal.ai/v1",
            key_id="k",
            read_on=dt.date(2026, 12, 6),
        )  # fmt: skip
        assert synced.after_call, properties


@settings(max_examples=60, deadline=None)
@given(price=PRICE, frames=st.integers(81, 121), fps=st.integers(5, 24))
def test_frame_quotes_are_price_times_seconds_rounded_up(
    price: Decimal, frames: int, fps: int
) -> None:
    table = _table(
        "video seconds",
        str(price),
        {"prompt": PROMPT, "num_frames": FRAMES, "frames_per_second": FPS},
    )
    seconds = math.ceil(frames / fps)  # by hand: a partial second counts whole
    quote = table.quote("x/y", {"num_frames": frames, "frames_per_second": fps})
    assert quote.total == price * seconds


FRAMES_TABLE = """\
schema_version: 1
table_version: "t"
effective_date: 2026-12-06
currency: USD
endpoints:
  x/y:
    source_url: https://example.com/x
    price_read_on: 2026-12-06
    inputs:
      num_frames: {type: integer, minimum: 1, maximum: 500, default: 100}
      fps: {type: integer, enum: [8, 16, 24], default: 24}
      style: {type: string, default: "a"}
    rules:
      - {name: seconds, kind: frames, input: num_frames, amount: "0.10", RATE}
"""


def test_a_frames_rule_in_a_hand_written_table() -> None:
    # a fixed rate: 100 frames at 24 a second = 4.17 s -> 5 s x 0.10 = 0.50
    table = parse_table(FRAMES_TABLE.replace("RATE", "rate: 24"))
    assert table.quote("x/y", {}).total == Decimal("0.50")
    # the rate from an input with an enum: 100 frames at 8 a second = 12.5 s -> 13 x 0.10
    table = parse_table(FRAMES_TABLE.replace("RATE", "rate_input: fps"))
    assert table.quote("x/y", {"fps": 8}).total == Decimal("1.30")
    # exact: 100 / 16 = 6.25 s x 0.10 = 0.625
    table = parse_table(FRAMES_TABLE.replace("RATE", "rate_input: fps, rounding: exact"))
    assert table.quote("x/y", {"fps": 16}).total == Decimal("0.625")
    assert table.endpoint("x/y").priced_inputs == ("num_frames", "fps")


@pytest.mark.parametrize(
    ("rate", "says"),
    [
        ("rate: 24, rate_input: fps", "not both"),
        ("unit_name: second", "give rate_input"),
        ("rate_input: style", "needs an integer frame rate, 'style' is string"),
        ("rate_input: nope", "unknown parameter 'nope'"),
        ("rate: 0", "greater than 0"),
    ],
)
def test_a_frames_rule_is_checked_when_the_table_loads(rate: str, says: str) -> None:
    from falbudget.errors import PriceTableError

    with pytest.raises(PriceTableError, match=says):
        parse_table(FRAMES_TABLE.replace("RATE", rate))


def test_pricing_diff_reads_a_frames_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(FRAMES_TABLE.replace("RATE", "rate_input: fps"))
    new.write_text(FRAMES_TABLE.replace("RATE", "rate_input: fps").replace('"0.10"', '"0.12"'))
    assert main(["pricing", "diff", str(old), str(new)]) == 1  # a rise
    out = capsys.readouterr().out
    assert "  rule 'seconds': amount 0.10 -> 0.12" in out
    # by hand: the dearest points, 497 to 500 frames at 8 a second = 62.1 to 62.5 s -> 63 s:
    # 6.30 -> 7.56; the diff names the first of them it meets
    assert "largest rise: +1.26 (6.30 -> 7.56) num_frames=497 fps=8" in out


def test_pricing_diff_names_a_frames_rules_keys_as_the_table_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the table says rate: 24 (and a megapixels rule pixels:), not the engine's "per"
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(FRAMES_TABLE.replace("RATE", "rate_input: fps"))
    new.write_text(FRAMES_TABLE.replace("RATE", "rate: 24"))
    main(["pricing", "diff", str(old), str(new)])
    out = capsys.readouterr().out
    assert (
        "  rule 'seconds': rate_input fps -> (none)\n  rule 'seconds': rate (none) -> 24\n" in out
    )
    assert " per " not in out


# -- characters of the request's own text --------------------------------------------------------
TEXT = {"type": "string", "minLength": 1, "maxLength": 5000}


@pytest.mark.parametrize(
    ("unit", "per"),
    [("1000 characters", 1000), ("1k characters", 1000), ("characters", 1), ("Character", 1),
     ("per 1000 characters", 1000), ("1M characters", 1_000_000)],
)  # fmt: skip
def test_character_units_are_read_with_their_block(unit: str, per: int) -> None:
    assert catalog.unit_kind(unit) == "characters"
    assert catalog.characters_per(unit) == per


@settings(max_examples=40, deadline=None)
@given(price=PRICE, length=st.integers(1, 5000))
def test_character_quotes_are_price_times_blocks_rounded_up(price: Decimal, length: int) -> None:
    text_input = {**TEXT, "default": "Hello"}  # optional: its default priced when left out
    table = _table("1000 characters", str(price), {"prompt": PROMPT, "text": text_input})
    assert table.quote("x/y", {}).total == price  # "Hello", 5 characters: 1 block
    blocks = math.ceil(length / 1000)  # 1 to 1000 characters: 1 block; 1001: 2; 5000: 5
    text = "é" * length  # 2 bytes each in UTF-8, yet one character each
    assert table.quote("x/y", {"text": text}).total == price * blocks
    per_character = _table("characters", str(price), {"prompt": PROMPT, "text": text_input})
    assert per_character.quote("x/y", {"text": text}).total == price * length


def test_characters_end_to_end_and_without_a_text(fake: FakePlatform, tmp_path: Path) -> None:
    tts = "fal-ai/speech-like/tts"
    fake.add(tts, "0.06", "1000 characters", {"text": TEXT}, ["text"])
    table = load_table(sync_to(tmp_path, tts))
    # 1001 characters: 2 blocks of 1000 (the second partial, rounded up) x 0.06 = 0.12
    assert table.quote(tts, {"text": "a" * 1001}).total == Decimal("0.12")
    with pytest.raises(InvalidArguments, match="text"):
        table.quote(tts, {"text": ""})  # the schema's minLength 1
    with pytest.raises(InvalidArguments, match=r"text.*required"):
        table.quote(tts, {})  # the price is the text's: a quote needs it
    entry = yaml.safe_load((tmp_path / "fal-sync.yaml").read_text())["endpoints"][tts]
    assert entry["inputs"]["text"] == {
        "type": "string", "min_length": 1, "max_length": 5000, "required": True
    }  # fmt: skip
    assert "code points" in entry["synced_from"]["note"]
    # a per-character unit without a text input (an enum, or nullable) needs a ceiling
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    for text in ({"type": "string", "enum": ["a", "b"]}, nullable):
        synced = catalog.entry_for(
            "x/y",
            {"unit_price": Decimal("0.06"), "unit": "1000 characters", "currency": "USD"},
            {"paths": {"/x/y": {"post": {"requestBody": {"content": {"application/json": {
                "schema": {"type": "object", "properties": {"text": text}}}}}}}}},
            api_url="https://api.fal.ai/v1",
            key_id="k",
            read_on=dt.date(2026, 12, 6),
        )  # fmt: skip
        assert synced.entry is not None and "after_call" in synced.entry, text


CHARS_TABLE = """
schema_version: 1
table_version: t
effective_date: 2026-12-06
currency: USD
endpoints:
  x/tts:
    source_url: https://fal.ai/models/x/tts
    price_read_on: 2026-12-06
    inputs:
      text: {type: string, required: true, min_length: 1, max_length: 3000}
      note: {type: string, default: "abc"}
      level: {type: integer, default: 1}
      maybe: {type: string, nullable: true}
      voice: {type: string, enum: [a, b], default: a}
    rules:
      - {name: speech, kind: characters, input: INPUT, amount: "0.05", RULE}
"""


def test_a_characters_rule_in_a_hand_written_table() -> None:
    table = parse_table(CHARS_TABLE.replace("INPUT", "text").replace("RULE", "per: 1000"))
    # 2001 characters: 3 blocks of 1000 (up) x 0.05 = 0.15
    quote = table.quote("x/tts", {"text": "a" * 2001})
    assert quote.total == Decimal("0.15")
    assert quote.line_items[0].detail == "2001 characters: 3 blocks of 1000"
    assert quote.line_items[0].value == 2001  # the count, never the text
    # exact: 2001 / 1000 = 2.001 blocks x 0.05 = 0.10005
    exact = CHARS_TABLE.replace("INPUT", "text").replace("RULE", "rounding: exact")
    assert parse_table(exact).quote("x/tts", {"text": "a" * 2001}).total == Decimal("0.10005")
    # per character, from a default: "abc" is 3 x 0.05 = 0.15
    per_one = CHARS_TABLE.replace("INPUT", "note").replace("RULE", "per: 1")
    assert parse_table(per_one).quote("x/tts", {}).total == Decimal("0.15")
    with pytest.raises(InvalidArguments, match=r"text=.*1 to 3000 characters"):
        table.quote("x/tts", {"text": "a" * 3001})
    # a required text that is not priced is left out of a plain quote as before
    assert parse_table(per_one).endpoint("x/tts").normalize_arguments({}) == {
        "note": "abc", "level": 1, "voice": "a"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("input_", "rule", "says"),
    [
        ("level", "per: 1000", "needs a string input .* 'level' is integer"),
        ("voice", "per: 1000", "needs a string input .* 'voice' is an enum"),
        ("maybe", "per: 1000", "'maybe' is nullable"),
        ("text", "per: 0", "greater than 0"),
        ("text", "rounding: down", "rounding"),
        ("nope", "per: 1000", "unknown parameter 'nope'"),
    ],
)
def test_a_characters_rule_is_checked_when_the_table_loads(
    input_: str, rule: str, says: str
) -> None:
    from falbudget.errors import PriceTableError

    with pytest.raises(PriceTableError, match=says):
        parse_table(CHARS_TABLE.replace("INPUT", input_).replace("RULE", rule))


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("{type: integer, default: 1, min_length: 1}", "min_length/max_length need a string"),
        ("{type: string, min_length: 5, max_length: 2}", "min_length: 5 is above"),
        ('{type: string, default: "", min_length: 1}', "default: 0 characters"),
        ("{type: string, min_length: -1}", "greater than or equal to 0"),
    ],
)
def test_string_lengths_are_checked_when_the_table_loads(spec: str, says: str) -> None:
    from falbudget.errors import PriceTableError

    broken = CHARS_TABLE.replace("INPUT", "text").replace("RULE", "per: 1000")
    broken = broken.replace('note: {type: string, default: "abc"}', f"note: {spec}")
    with pytest.raises(PriceTableError, match=says):
        parse_table(broken)


def test_pricing_diff_reads_a_characters_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    text = CHARS_TABLE.replace("INPUT", "text").replace("RULE", "per: 1000")
    old.write_text(text)
    new.write_text(text.replace('"0.05"', '"0.06"').replace("max_length: 3000", "max_length: 4000"))
    assert main(["pricing", "diff", str(old), str(new)]) == 1  # a rise
    out = capsys.readouterr().out
    assert "  rule 'speech': amount 0.05 -> 0.06" in out
    assert "max_length 3000 -> 4000" in out
    # the grid samples lengths: 1, 1000, 1001, 2000, 2001, 3000 in both, 3001, 4000 only in
    # new; by hand the dearest shared points, 2001 and 3000 characters = 3 blocks: 0.15 ->
    # 0.18; the diff names the first of them it meets
    assert "grid: 6 points priced in both: 6 up, 0 down, 0 unchanged; 2 only in new" in out
    assert "largest rise: +0.03 (0.15 -> 0.18) text=<2001 characters>" in out


def test_a_text_s_grid_samples_its_length() -> None:
    from falbudget.pricing.engine import InputRule, sample_texts

    def lengths(**bounds: int) -> list[int]:
        spec = InputRule("text", "string", required=True, **bounds)
        return [len(text) for text in sample_texts(spec, 1000)]

    # the shortest, each block's last character and the next one, the longest
    assert lengths(min_length=1, max_length=2500) == [1, 1000, 1001, 2000, 2001, 2500]
    # any length: 0, then 1000, 1001, ... 100000, 100001 (100 blocks): 1 + 2 x 100 lengths
    unbounded = lengths()
    assert (unbounded[:3], unbounded[-1], len(unbounded)) == ([0, 1000, 1001], 100_001, 201)
    assert lengths(min_length=200_000) == [200_000]  # never shorter than the schema allows
    table = parse_table(CHARS_TABLE.replace("INPUT", "text").replace("RULE", "per: 1000"))
    # 1 to 3000 characters: 1 to 3 blocks x 0.05
    assert table.endpoint("x/tts").price_range() == (Decimal("0.05"), Decimal("0.15"))
    no_longest = CHARS_TABLE.replace(", max_length: 3000", "").replace("INPUT", "text")
    with pytest.raises(ValueError, match="any length"):
        parse_table(no_longest.replace("RULE", "per: 1000")).endpoint("x/tts").price_range()


def test_a_frames_rule_never_credits_a_negative_count_of_frames() -> None:
    # a schema may allow 0 or fewer frames; the rule then adds nothing (as per_unit does below
    # its threshold): before, -50 frames at 24 a second was -2 s x 0.10 = -0.20, a quote that
    # lowered the hold beside it
    table = parse_table(
        FRAMES_TABLE.replace("RATE", "rate: 24").replace("minimum: 1,", "minimum: -100,")
    )
    assert table.quote("x/y", {"num_frames": -50}).total == Decimal(0)
    assert table.quote("x/y", {"num_frames": 0}).total == Decimal(0)
    exact = parse_table(
        FRAMES_TABLE.replace("RATE", "rate: 24, rounding: exact").replace(
            "minimum: 1,", "minimum: -100,"
        )
    )
    assert exact.quote("x/y", {"num_frames": -1}).total == Decimal(0)
    # 1 frame at 24 a second: 1/24 s, a partial second counted whole: 1 x 0.10
    assert table.quote("x/y", {"num_frames": 1}).total == Decimal("0.10")


@pytest.mark.parametrize("which", ["num_frames", "fps"])
def test_a_frames_rule_may_not_read_a_nullable_input(which: str) -> None:
    # null carries no number of frames or frame rate: the quote failed with a TypeError
    from falbudget.errors import PriceTableError

    text = FRAMES_TABLE.replace("RATE", "rate_input: fps").replace(
        f"{which}: {{type: integer,", f"{which}: {{type: integer, nullable: true,"
    )
    with pytest.raises(PriceTableError, match=f"'{which}'.*null"):
        parse_table(text)


def test_a_priced_nullable_input_is_refused_for_every_rule_kind() -> None:
    from falbudget.errors import PriceTableError

    per_unit = FRAMES_TABLE.replace(
        '{name: seconds, kind: frames, input: num_frames, amount: "0.10", RATE}',
        '{name: n, kind: per_unit, input: num_frames, amount: "0.10", unit: 1}',
    ).replace("num_frames: {type: integer,", "num_frames: {type: integer, nullable: true,")
    with pytest.raises(PriceTableError, match="'num_frames', a nullable input"):
        parse_table(per_unit)


@pytest.mark.parametrize("nullable", ["num_frames", "frames_per_second"])
def test_the_sync_prices_no_frames_from_a_nullable_input(nullable: str) -> None:
    # fal's schema lets it be null: the number of seconds is not known before the call, so the
    # entry needs a ceiling instead of a rule that a null would break (or a table that fails)
    properties: dict[str, Any] = {"prompt": PROMPT, "num_frames": FRAMES, "frames_per_second": FPS}
    properties[nullable] = {**properties[nullable], "nullable": True}
    synced = catalog.entry_for(
        "x/y",
        {"unit_price": Decimal("0.1"), "unit": "seconds", "currency": "USD"},
        {"paths": {"/x/y": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"type": "object", "properties": properties}}}}}}}},
        api_url="https://api.fal.ai/v1",
        key_id="k",
        read_on=dt.date(2026, 12, 6),
    )  # fmt: skip
    assert synced.after_call, synced.entry
    assert f"{nullable} may be null" in synced.reason
    document = catalog.table_document(catalog.SyncResult(synced=[synced]), dt.date(2026, 12, 6))
    assert parse_table(yaml.safe_dump(document, sort_keys=False)).endpoint("x/y").needs_ceiling


def test_a_number_duration_given_as_a_float_is_priced_by_its_enum() -> None:
    # fal's schema: duration a number from an enum of 5 and 10; a JSON client may send 10.0,
    # which the check accepted (10.0 == 10) and the lookup then missed (keyed "10"): KeyError
    table = _table(
        "seconds",
        "0.1",
        {"prompt": PROMPT, "duration": {"type": "number", "enum": [5, 10], "default": 5}},
    )
    # by hand: 10 seconds x 0.1 = 1.00; 5 seconds x 0.1 = 0.50
    assert table.quote("x/y", {"duration": 10.0}).total == Decimal("1.00")
    assert table.quote("x/y", {"duration": 5.0}).total == Decimal("0.50")
    assert table.quote("x/y", {"duration": 10}).total == Decimal("1.00")
    with pytest.raises(InvalidArguments, match="duration"):
        table.quote("x/y", {"duration": 7.5})


def test_a_text_priced_by_large_blocks_samples_few_of_them() -> None:
    # blocks of a million characters and no max_length: 100 blocks sampled would be texts of
    # about 10**6 x 100 x 101 characters (10 GB; pricing diff died of a MemoryError); at most
    # SAMPLED_CHARACTERS (20,000,000) in all: isqrt(20) = 4 blocks, 0 and 1,000,000 ... 4,000,001
    from falbudget.pricing.engine import InputRule, sample_texts

    texts = sample_texts(InputRule("text", "string", required=True), 1_000_000)
    lengths = [len(text) for text in texts]
    assert lengths == [0, *(n * 10**6 + d for n in range(1, 5) for d in (0, 1))]
    assert sum(lengths) <= 20_000_000 + 4  # 2 x (1 + 2 + 3 + 4) x 10**6 + 4
    # blocks of 1000 are sampled as before: 100 blocks, 1000 x 100 x 101 characters in all
    assert len(sample_texts(InputRule("text", "string", required=True), 1000)) == 201
