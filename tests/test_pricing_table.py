"""Loading price tables: every kind of mistake is a PriceTableError naming file, endpoint and field;
and a second, made-up table shows that a new endpoint is YAML, not code."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget import FalbudgetError, InvalidArguments, PriceTableError, UnknownEndpoint
from falbudget.pricing import PriceTable, load_table, parse_table

MAGI = "fal-ai/magi/image-to-video"
REPO_TABLE = Path(__file__).resolve().parents[1] / "pricing.yaml"
TEXT = REPO_TABLE.read_text()
POPULAR_MARK = "  # -- popular fal endpoints beyond MAGI-1"


def edited(old: str, new: str) -> str:
    """pricing.yaml with one exact piece of text of its MAGI-1 part replaced (the piece must be
    there, once); the popular endpoints after it are left as they are."""
    magi, popular = split_magi(TEXT)
    assert magi.count(old) == 1, old
    return magi.replace(old, new) + popular


def split_magi(text: str) -> tuple[str, str]:
    """pricing.yaml cut where its popular endpoints (after the MAGI-1 family) begin."""
    at = text.index(POPULAR_MARK)
    return text[:at], text[at:]


def line_of(text: str, line: str) -> int:
    """The 1-based number of the line that is exactly ``line``."""
    return text.splitlines().index(line) + 1


def refused(tmp_path: Path, text: str) -> PriceTableError:
    """Load ``text`` from a file and return the error, checking what every error must carry."""
    path = tmp_path / "table.yaml"
    path.write_text(text)
    with pytest.raises(PriceTableError) as info:
        load_table(path)
    error = info.value
    assert isinstance(error, FalbudgetError)
    assert isinstance(error, ValueError)
    assert error.file == str(path)
    assert str(error).startswith(f"{path}: ")
    assert "Traceback" not in str(error)
    return error


# (what is wrong, the edit, endpoint, field, words the message must hold)
CASES: list[tuple[str, str, str, str | None, str | None, str]] = [
    (
        "unknown key at the top level",
        "currency: USD\n",
        "currency: USD\ncolour: red\n",
        None,
        "colour",
        "unknown key (not part of the table format)",
    ),
    (
        "unknown key in an endpoint",
        "    price_read_on: 2026-11-24\n",
        "    price_read_on: 2026-11-24\n    colour: red\n",
        MAGI,
        "colour",
        "unknown key (not part of the table format)",
    ),
    (
        "unknown key in a rule",
        "        unit_name: second\n",
        "        unit_name: second\n        minimum_charge: 1\n",
        MAGI,
        "rules.1.minimum_charge",
        "unknown key (not part of the table format)",
    ),
    (
        "unknown key in an input",
        "        default: 96\n",
        "        default: 96\n        step: 24\n",
        MAGI,
        "inputs.num_frames.step",
        "unknown key (not part of the table format)",
    ),
    (
        "schema_version as a string",
        "schema_version: 1\n",
        'schema_version: "1"\n',
        None,
        "schema_version",
        "Input should be a valid integer (got '1')",
    ),
    (
        "an amount written as a YAML float",
        '        amount: "0.80"\n',
        "        amount: 0.8\n",
        MAGI,
        "rules.0.amount",
        '0.8 must be written as a quoted decimal string such as "0.80"'
        " (a YAML float cannot hold cents exactly)",
    ),
    (
        "the per-unit amount as a YAML float",
        '        amount: "0.20"\n',
        "        amount: 0.20\n",
        MAGI,
        "rules.1.amount",
        'must be written as a quoted decimal string such as "0.80"',
    ),
    (
        "a factor as a YAML float",
        '          "720p": "1"\n',
        '          "720p": 1.0\n',
        MAGI,
        "rules.2.factors.720p",
        'must be written as a quoted decimal string such as "0.80"',
    ),
    (
        "an amount as a boolean",
        '        amount: "0.20"\n',
        "        amount: yes\n",
        MAGI,
        "rules.1.amount",
        "True must be written as a quoted decimal string",
    ),
    (
        "a negative price",
        '        amount: "0.20"\n',
        '        amount: "-0.20"\n',
        MAGI,
        "rules.1.amount",
        "Input should be greater than or equal to 0 (got '-0.20')",
    ),
    (
        "a negative factor",
        '          "480p": "0.5"\n',
        '          "480p": "-0.5"\n',
        MAGI,
        "rules.2.factors.480p",
        "greater than or equal to 0",
    ),
    (
        "a negative floor",
        '        floor: "1"\n',
        '        floor: "-1"\n',
        MAGI,
        "rules.3.floor",
        "greater than or equal to 0",
    ),
    (
        "an amount that is not a number",
        '        amount: "0.20"\n',
        '        amount: "twenty cents"\n',
        MAGI,
        "rules.1.amount",
        "Input should be a valid decimal (got 'twenty cents')",
    ),
    (
        "an infinite amount",
        '        amount: "0.20"\n',
        '        amount: "Infinity"\n',
        MAGI,
        "rules.1.amount",
        "Input should be a finite number",
    ),
    (
        "a default outside its enum",
        '        default: "720p"\n',
        '        default: "1080p"\n',
        MAGI,
        "inputs.resolution.default",
        "'1080p' is not one of its enum ['480p', '720p']",
    ),
    (
        "a steps default given as the string of the prose",
        "        default: 16\n",
        '        default: "16"\n',
        MAGI,
        "inputs.num_inference_steps.default",
        "'16' is not of type integer",
    ),
    (
        "a default below its range",
        "        default: 96\n",
        "        default: 95\n",
        MAGI,
        "inputs.num_frames.default",
        "95 is below its minimum 96",
    ),
    (
        "a default above its range",
        "        default: 96\n",
        "        default: 193\n",
        MAGI,
        "inputs.num_frames.default",
        "193 is above its maximum 192",
    ),
    (
        "a minimum above the maximum",
        "        minimum: 96\n",
        "        minimum: 200\n",
        MAGI,
        "inputs.num_frames.minimum",
        "200 is above the maximum 192",
    ),
    (
        "an enum value of the wrong type",
        "        enum: [4, 8, 16, 32, 64]\n",
        '        enum: [4, 8, "16", 32, 64]\n',
        MAGI,
        "inputs.num_inference_steps.enum",
        "'16' is not of type integer",
    ),
    (
        "an unknown input type",
        "        type: boolean\n",
        "        type: bool\n",
        MAGI,
        "inputs.enable_safety_checker.type",
        "Input should be 'string', 'integer', 'number', 'boolean', 'image_size' or 'json'"
        " (got 'bool')",
    ),
    (
        "a required input with a default",
        "        required: true\n        description: The text prompt",
        '        required: true\n        default: "a cat"\n        description: The text prompt',
        MAGI,
        "inputs.prompt.default",
        "a required input cannot have a default",
    ),
    (
        "a rule naming an unknown parameter",
        "        input: num_frames\n",
        "        input: num_frame\n",
        MAGI,
        "rules.1.input",
        "rule 'extra seconds' reads unknown parameter 'num_frame'; known: aspect_ratio,",
    ),
    (
        "a rule reading a required input",
        "        input: resolution\n",
        "        input: prompt\n",
        MAGI,
        "rules.2.input",
        "reads 'prompt', a required input",
    ),
    (
        "a rule reading an input without a default",
        "        input: num_frames\n",
        "        input: seed\n",
        MAGI,
        "rules.1.input",
        "reads 'seed', which has no default",
    ),
    (
        "a per-unit rule on a string input",
        "        input: num_frames\n",
        "        input: aspect_ratio\n",
        MAGI,
        "rules.1.input",
        "needs an integer input, 'aspect_ratio' is string",
    ),
    (
        "a lookup on an input without an enum",
        "        input: resolution\n",
        "        input: num_frames\n",
        MAGI,
        "rules.2.input",
        "lookup rule 'resolution' needs 'num_frames' to have an enum",
    ),
    (
        "a lookup missing a factor for an enum value",
        '          "720p": "1"\n',
        "",
        MAGI,
        "rules.2.factors",
        "no factor for 720p",
    ),
    (
        "a lookup with a factor for a value the input does not allow",
        '          "720p": "1"\n',
        '          "720p": "1"\n          "1080p": "2"\n',
        MAGI,
        "rules.2.factors",
        "1080p not allowed by 'resolution'",
    ),
    (
        "an unknown rule kind",
        "        kind: lookup\n",
        "        kind: multiply\n",
        MAGI,
        "rules.2",
        "Input tag 'multiply' found using 'kind' does not match any of the expected tags",
    ),
    (
        "an unknown rounding mode",
        "        rounding: up\n",
        "        rounding: nearest\n",
        MAGI,
        "rules.1.rounding",
        "Input should be 'up', 'down' or 'exact' (got 'nearest')",
    ),
    (
        "a zero unit",
        "        unit: 24\n",
        "        unit: 0\n",
        MAGI,
        "rules.1.unit",
        "Input should be greater than 0 (got 0)",
    ),
    (
        "a rule without an amount",
        '        amount: "0.80"\n',
        "",
        MAGI,
        "rules.0.amount",
        "Field required",
    ),
    (
        "a currency other than USD",
        "currency: USD\n",
        "currency: EUR\n",
        None,
        "currency",
        "Input should be 'USD' (got 'EUR')",
    ),
    (
        "a date that is not a date",
        "    price_read_on: 2026-11-24\n",
        "    price_read_on: yesterday\n",
        MAGI,
        "price_read_on",
        "valid date",
    ),
    (
        "a source URL that is not a URL",
        "    source_url: https://fal.ai/models/fal-ai/magi/image-to-video\n",
        "    source_url: not a url\n",
        MAGI,
        "source_url",
        "valid URL",
    ),
    (
        "schema_version 2",
        "schema_version: 1\n",
        "schema_version: 2\n",
        None,
        "schema_version",
        "schema_version 2 is not supported; this falbudget reads 1",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "endpoint", "field", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_mistake_names_file_endpoint_and_field(
    tmp_path: Path, old: str, new: str, endpoint: str | None, field: str | None, words: str
) -> None:
    error = refused(tmp_path, edited(old, new))
    assert error.endpoint == endpoint
    assert error.field == field
    assert words in str(error)
    where = f"endpoint {endpoint!r}: field {field}: " if endpoint else f"field {field}: "
    assert where in str(error)


def test_a_float_amount_message_in_full(tmp_path: Path) -> None:
    error = refused(tmp_path, edited('        amount: "0.80"\n', "        amount: 0.8\n"))
    assert error.reason == (
        '0.8 must be written as a quoted decimal string such as "0.80"'
        " (a YAML float cannot hold cents exactly)"
    )


def test_empty_endpoints(tmp_path: Path) -> None:
    head = TEXT.split("endpoints:")[0]
    error = refused(tmp_path, head + "endpoints: {}\n")
    assert (error.endpoint, error.field) == (None, "endpoints")
    assert "at least 1 item" in str(error)


def test_an_endpoint_without_rules(tmp_path: Path) -> None:
    head = TEXT.split("    rules:")[0]
    error = refused(tmp_path, head + "    rules: []\n")
    assert (error.endpoint, error.field) == (MAGI, "rules")
    assert "at least 1 item" in str(error)


def test_a_missing_top_level_key(tmp_path: Path) -> None:
    error = refused(tmp_path, edited('table_version: "2026.12.06"\n', ""))
    assert (error.endpoint, error.field) == (None, "table_version")
    assert "Field required" in str(error)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    text = edited("    title: MAGI-1 (image to video)\n", "    title: MAGI-1: image: to video\n")
    error = refused(tmp_path, text)
    assert (error.endpoint, error.field) == (None, None)
    line = line_of(text, "    title: MAGI-1: image: to video")
    assert line == 15
    assert f"not valid YAML at line {line}, column " in str(error)
    assert "mapping values are not allowed" in str(error)


def test_a_tab_in_the_indentation_names_the_line(tmp_path: Path) -> None:
    text = edited("      prompt:\n", "      prompt:\n\tx: 1\n")
    error = refused(tmp_path, text)
    assert f"not valid YAML at line {line_of(text, chr(9) + 'x: 1')}, column 1" in str(error)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    # YAML itself would keep the last one silently: a second amount line would change the price
    text = edited('        amount: "0.20"\n', '        amount: "0.20"\n        amount: "0.25"\n')
    error = refused(tmp_path, text)
    line = line_of(text, '        amount: "0.25"')
    assert f"not valid YAML at line {line}, column 9" in str(error)
    assert "duplicate key 'amount' (each key may appear once)" in str(error)


def test_an_endpoint_given_twice_is_refused(tmp_path: Path) -> None:
    endpoint_block = split_magi(TEXT)[0].split("endpoints:\n")[1]  # the MAGI-1 family again
    error = refused(tmp_path, TEXT + endpoint_block)
    assert f"duplicate key {MAGI!r}" in str(error)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- 1\n- 2\n", "just text\n", "3\n"])
def test_a_document_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    error = refused(tmp_path, text)
    assert error.reason == "the table must be a YAML mapping at the top level"


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "pricing.yaml"
    with pytest.raises(PriceTableError) as info:
        load_table(path)
    error = info.value
    assert (error.file, error.endpoint, error.field) == (str(path), None, None)
    assert str(error) == f"{path}: cannot read the price table: No such file or directory"


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError) as info:
        load_table(tmp_path)
    assert info.value.file == str(tmp_path)
    assert "cannot read the price table" in str(info.value)


def test_parse_table_names_its_source() -> None:
    with pytest.raises(PriceTableError) as info:
        parse_table(edited("currency: USD\n", "currency: EUR\n"), source="inline")
    assert info.value.file == "inline"
    with pytest.raises(PriceTableError) as info:
        parse_table(b"- 1\n")
    assert info.value.file == "<string>"


def test_amounts_may_be_integers_and_bytes_or_text_parse_the_same() -> None:
    text = edited('        amount: "0.80"\n', "        amount: 1\n")
    by_text = parse_table(text)
    by_bytes = parse_table(text.encode())
    assert by_text.quote(MAGI).total == Decimal("1.00")  # 1 x 1 x 1
    assert by_text.sha256 == by_bytes.sha256


def test_the_repository_table_loads_with_its_metadata() -> None:
    table = load_table(REPO_TABLE)
    assert table.schema_version == 1
    assert table.table_version == "2026.12.06"
    assert table.effective_date == "2026-11-24"
    assert table.currency == "USD"
    assert table.source == str(REPO_TABLE)
    assert list(table.endpoints)[:5] == [
        MAGI,
        "fal-ai/magi",
        "fal-ai/magi/extend-video",
        "fal-ai/magi-distilled",
        "fal-ai/magi-distilled/extend-video",
    ]  # image to video, then the rest of the family, then the 24 popular endpoints
    assert len(table.endpoints) == 5 + 24 and "fal-ai/flux-1/dev" in table.endpoints
    magi = table.endpoint(MAGI)
    assert magi.source_url == "https://fal.ai/models/fal-ai/magi/image-to-video"
    assert magi.price_read_on == "2026-11-24"
    assert list(magi.inputs) == [
        "prompt",
        "image_url",
        "num_frames",
        "seed",
        "resolution",
        "num_inference_steps",
        "enable_safety_checker",
        "aspect_ratio",
    ]
    assert magi.priced_inputs == ("num_frames", "resolution", "num_inference_steps")
    assert magi.inputs["num_inference_steps"].enum == (4, 8, 16, 32, 64)
    assert magi.inputs["prompt"].required is True
    assert magi.inputs["seed"].nullable is True
    # cheapest: 96 frames, 480p, <= 16 steps = 0.80 x 0.5; dearest: (0.80 + 0.80) x 1 x 4
    assert magi.price_range() == (Decimal("0.40"), Decimal("6.40"))


# --------------------------------------------------------------------------- a made-up table

ACME = textwrap.dedent(
    """\
    # A made-up table: nothing here is in falbudget's code.
    schema_version: 1
    table_version: "acme-3"
    effective_date: 2026-01-01
    currency: USD
    endpoints:
      acme/upscaler:
        title: Acme video upscaler
        source_url: https://example.com/acme/upscaler
        price_read_on: 2026-01-02
        inputs:
          video_url: {type: string, required: true}
          seconds: {type: integer, minimum: 1, maximum: 600, default: 10}
          scale: {type: string, enum: ["2x", "4x"], default: "2x"}
          denoise: {type: boolean, enum: [false, true], default: false}
          passes: {type: integer, minimum: 1, maximum: 40, default: 10}
          strength: {type: number, minimum: 0, maximum: 1, default: 0.5}
        rules:
          - name: base
            kind: base
            amount: "0.05"
          - name: long clips
            kind: per_unit
            input: seconds
            above: 10
            unit: 5
            rounding: down
            amount: "0.02"
            unit_name: block
          - name: scale
            kind: lookup
            input: scale
            factors: {"2x": "1", "4x": "2.5"}
          - name: denoise
            kind: lookup
            input: denoise
            factors: {"true": "1.2", "false": "1"}
          - name: passes
            kind: proportional
            input: passes
            per: 10
            floor: "0.5"
            unit_name: passes
      acme/tts:
        source_url: https://example.com/acme/tts
        price_read_on: 2026-01-02
        inputs:
          text: {type: string}
          characters: {type: integer, minimum: 0, maximum: 100000, default: 0}
        rules:
          - name: characters
            kind: per_unit
            input: characters
            unit: 3
            rounding: exact
            amount: "0.01"
    """
)
UPSCALER = "acme/upscaler"
TTS = "acme/tts"


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> PriceTable:
    path = tmp_path_factory.mktemp("acme") / "acme.yaml"
    path.write_text(ACME)
    return load_table(path)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "0.05"),
        # 10 s is not beyond 10: 0.05 x 1 (2x) x 1 (no denoise) x max(0.5, 10/10)
        ({"seconds": 14}, "0.05"),  # 4 s beyond: floor(4/5) = 0 blocks (rounding down)
        ({"seconds": 15}, "0.07"),  # 5 s beyond: 1 block -> 0.05 + 0.02
        ({"seconds": 19}, "0.07"),  # 9 s beyond: floor(9/5) = 1 -> 0.05 + 0.02
        ({"seconds": 1}, "0.05"),  # below `above`: no blocks, never a negative count
        ({"seconds": 37, "scale": "4x", "passes": 3}, "0.1875"),
        # 27 s beyond: 5 blocks -> 0.05 + 0.10 = 0.15; x2.5 = 0.375; x max(0.5, 0.3) = 0.1875
        ({"seconds": 37, "scale": "4x", "passes": 25}, "0.9375"),
        # 0.375 x max(0.5, 2.5) = 0.9375
        ({"passes": 1}, "0.025"),  # 0.05 x max(0.5, 0.1) = 0.05 x 0.5 (the floor)
        ({"passes": 5}, "0.025"),  # 0.05 x max(0.5, 0.5)
        ({"passes": 7}, "0.035"),  # 0.05 x 0.7
        ({"denoise": True}, "0.06"),  # 0.05 x 1.2
        ({"seconds": 600, "scale": "4x", "denoise": True, "passes": 40}, "28.92"),
        # 590 s beyond: 118 blocks -> 0.05 + 2.36 = 2.41; x2.5 = 6.025; x1.2 = 7.23; x4 = 28.92
        ({"strength": 0.9, "video_url": "https://example.com/v.mp4"}, "0.05"),  # unpriced inputs
    ],
)
def test_a_made_up_endpoint_is_yaml_not_code(
    acme: PriceTable, arguments: dict[str, Any], expected: str
) -> None:
    quote = acme.quote(UPSCALER, arguments)
    assert quote.total == Decimal(expected)
    assert str(quote.total) == expected
    assert quote.endpoint == UPSCALER
    assert quote.table_version == "acme-3"


def test_made_up_line_items(acme: PriceTable) -> None:
    items = acme.quote(UPSCALER, {"seconds": 37, "scale": "4x", "passes": 3}).line_items
    assert [(item.rule, item.kind, item.input, item.value) for item in items] == [
        ("base", "base", None, None),
        ("long clips", "per_unit", "seconds", 37),
        ("scale", "lookup", "scale", "4x"),
        ("denoise", "lookup", "denoise", False),
        ("passes", "proportional", "passes", 3),
    ]
    assert [item.effect() for item in items] == ["0.05", "+0.10", "x2.5", "x1", "x0.5"]
    assert items[1].detail == "5 extra blocks"
    assert items[4].detail == "3 passes"


def test_made_up_inputs_are_validated(acme: PriceTable) -> None:
    for bad in (
        {"scale": "8x"},
        {"seconds": 0},
        {"seconds": 601},
        {"denoise": "true"},
        {"passes": 2.0},
        {"strength": 1.5},
        {"strength": float("nan")},
        {"strength": True},
        {"strength": "0.5"},
        {"num_frames": 96},
    ):
        with pytest.raises(InvalidArguments) as info:
            acme.quote(UPSCALER, bad)
        assert info.value.parameter == next(iter(bad))
    assert "a number from 0 to 1" in str(_error(acme, {"strength": 1.5}))
    assert acme.quote(UPSCALER, {"strength": 0}).arguments["strength"] == 0
    assert acme.quote(UPSCALER, {"strength": 0.25}).arguments["strength"] == 0.25
    with pytest.raises(InvalidArguments):
        acme.quote(UPSCALER, {}, strict=True)  # video_url is required in strict mode
    assert acme.quote(UPSCALER, {"video_url": "u"}, strict=True).total == Decimal("0.05")


def _error(table: PriceTable, arguments: dict[str, Any]) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as info:
        table.quote(UPSCALER, arguments)
    return info.value


@pytest.mark.parametrize(
    ("characters", "expected"),
    [
        (0, "0.00"),  # nothing to say costs nothing; money keeps two places
        (3, "0.01"),  # 3/3 x 0.01
        (9, "0.03"),  # 9/3 x 0.01
        (10, "0.033334"),  # 10/3 x 0.01 = 0.0333... rounded UP to whole micro-USD
        (1, "0.003334"),  # 1/3 x 0.01 = 0.00333... -> 0.003334: sub-cent digits kept
        (100000, "333.333334"),  # 100000/3 x 0.01 = 333.3333... -> 333.333334
    ],
)
def test_exact_rounding_and_totals_rounded_up_to_a_micro_usd(
    acme: PriceTable, characters: int, expected: str
) -> None:
    quote = acme.quote(TTS, {"characters": characters})
    assert str(quote.total) == expected
    assert quote.to_dict()["total"] == expected


def test_the_made_up_table_has_only_its_own_endpoints(acme: PriceTable) -> None:
    assert list(acme.endpoints) == [UPSCALER, TTS]
    with pytest.raises(UnknownEndpoint) as info:
        acme.quote(MAGI)
    assert "the table prices 2 endpoint(s)" in str(info.value)
    with pytest.raises(UnknownEndpoint) as info:
        acme.quote("acme/upscale")
    assert info.value.close_matches[0] == UPSCALER


def test_rules_apply_in_order_to_a_running_total() -> None:
    def table(rules: str) -> PriceTable:
        return parse_table(
            textwrap.dedent(
                """\
                schema_version: 1
                table_version: "order"
                effective_date: 2026-01-01
                currency: USD
                endpoints:
                  acme/x:
                    source_url: https://example.com/x
                    price_read_on: 2026-01-01
                    inputs:
                      size: {type: string, enum: [s, l], default: l}
                    rules:
                """
            )
            + textwrap.indent(textwrap.dedent(rules), " " * 6)
        )

    base = "- {name: a, kind: base, amount: '1.00'}\n"
    extra = "- {name: b, kind: base, amount: '0.50'}\n"
    double = "- {name: size, kind: lookup, input: size, factors: {s: '1', l: '2'}}\n"
    # 1.00 x 2 + 0.50 = 2.50
    assert table(base + double + extra).quote("acme/x").total == Decimal("2.50")
    # (1.00 + 0.50) x 2 = 3.00
    assert table(base + extra + double).quote("acme/x").total == Decimal("3.00")
    # 0 x 2 + 1.00 = 1.00: a factor before any money multiplies nothing
    assert table(double + base).quote("acme/x").total == Decimal("1.00")


def test_a_price_too_large_for_exact_decimals_is_refused_not_crashed() -> None:
    # an integer input with no maximum: 10**40 units would need more than 28 digits
    table = parse_table(
        textwrap.dedent(
            """\
            schema_version: 1
            table_version: "big"
            effective_date: 2026-01-01
            currency: USD
            endpoints:
              acme/tokens:
                source_url: https://example.com/tokens
                price_read_on: 2026-01-01
                inputs:
                  tokens: {type: integer, minimum: 0, default: 0}
                rules:
                  - {name: tokens, kind: per_unit, input: tokens, unit: 1000, amount: "0.002"}
            """
        )
    )
    # 1,234,567 tokens: ceil(1234.567) = 1235 thousands x 0.002 = 2.47
    assert table.quote("acme/tokens", {"tokens": 1_234_567}).total == Decimal("2.47")
    with pytest.raises(InvalidArguments) as info:
        table.quote("acme/tokens", {"tokens": 10**40})
    assert "fits in 28 significant digits" in str(info.value)


def test_yaml_anchors_and_merge_keys_share_an_input_schema() -> None:
    # two endpoints sharing their inputs through an anchor; the second overrides one key
    table = parse_table(
        textwrap.dedent(
            """\
            schema_version: 1
            table_version: "shared"
            effective_date: 2026-01-01
            currency: USD
            endpoints:
              acme/small:
                source_url: https://example.com/small
                price_read_on: 2026-01-01
                inputs: &inputs
                  size: {type: string, enum: [s, l], default: s}
                  steps: {type: integer, minimum: 1, maximum: 8, default: 1}
                rules:
                  - {name: base, kind: base, amount: "0.10"}
                  - {name: size, kind: lookup, input: size, factors: {s: "1", l: "3"}}
              acme/large:
                source_url: https://example.com/large
                price_read_on: 2026-01-01
                inputs:
                  <<: *inputs
                  size: {type: string, enum: [s, l], default: l}
                rules:
                  - {name: base, kind: base, amount: "0.10"}
                  - {name: size, kind: lookup, input: size, factors: {s: "1", l: "3"}}
            """
        )
    )
    assert table.quote("acme/small").total == Decimal("0.10")  # 0.10 x 1
    assert table.quote("acme/large").total == Decimal("0.30")  # 0.10 x 3: the default is l
    assert sorted(table.endpoint("acme/large").inputs) == ["size", "steps"]
