"""The popular fal endpoints of pricing.yaml (beyond MAGI-1): each reproduces the example prices
on its fal page (the page and its words are quoted beside each test; the figures are worked out
by hand). They ship in the packaged table, so the guard and `falbudget quote` price them out of
the box."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from falbudget.errors import InvalidArguments
from falbudget.pricing.loader import default_table, load_table, packaged_table_path

ROOT = Path(__file__).resolve().parent.parent
TABLE = load_table(ROOT / "pricing.yaml")
MAGI = {
    "fal-ai/magi/image-to-video",
    "fal-ai/magi",
    "fal-ai/magi/extend-video",
    "fal-ai/magi-distilled",
    "fal-ai/magi-distilled/extend-video",
}
D = Decimal


def total(endpoint: str, **arguments: object) -> Decimal:
    return TABLE.quote(endpoint, arguments).total


def test_the_shipped_copy_is_the_repository_s() -> None:
    assert packaged_table_path().read_bytes() == (ROOT / "pricing.yaml").read_bytes()
    popular = [e for name, e in TABLE.endpoints.items() if name not in MAGI]
    assert len(TABLE.endpoints) == 5 + 24 and len(popular) == 24
    for endpoint in popular:
        assert endpoint.source_url.startswith("https://fal.ai/models/")
        assert endpoint.price_read_on == "2026-12-06"


def test_flux_1_dev_per_megapixel_rounded_up() -> None:
    # fal.ai/models/fal-ai/flux-1/dev/playground: "$0.025 per megapixel. Images are billed by
    # rounding up to the nearest megapixel."
    e = "fal-ai/flux-1/dev"
    assert total(e) == D("0.025")  # landscape_4_3, 1024x768: 1 megapixel
    assert total(e, image_size="square_hd") == D("0.025")  # 1024x1024: 1 megapixel
    assert total(e, image_size={"width": 2048, "height": 1024}) == D("0.05")  # exactly 2
    assert total(e, image_size={"width": 1500, "height": 1000}) == D("0.05")  # 1.43, up to 2
    assert total(e, image_size={"width": 2048, "height": 2048}, num_images=4) == D("0.40")


def test_flux_kontext_per_image() -> None:
    # fal.ai/models/fal-ai/flux-pro/kontext/llms.txt: "Price: $0.04 per images"
    e = "fal-ai/flux-pro/kontext"
    assert total(e) == D("0.04")
    assert total(e, num_images=3) == D("0.12")


@pytest.mark.parametrize(
    ("endpoint", "five", "ten"),
    [
        # "Price: $0.045 per seconds": 5 x 0.045, 10 x 0.045
        ("fal-ai/kling-video/v1/standard/image-to-video", "0.225", "0.45"),
        # "For 5s video your request will cost $0.28. For every additional second ... $0.056"
        ("fal-ai/kling-video/v2.1/standard/image-to-video", "0.28", "0.56"),
        # "For 5s video ... $0.21. For every additional second ... $0.042."
        ("fal-ai/kling-video/v2.5-turbo/standard/image-to-video", "0.21", "0.42"),
        # "For 5s video ... $0.35. For every additional second ... $0.07."
        ("fal-ai/kling-video/v2.5-turbo/pro/image-to-video", "0.35", "0.70"),
    ],
)
def test_kling_five_seconds_then_each_second_more(endpoint: str, five: str, ten: str) -> None:
    assert total(endpoint) == D(five)  # duration defaults to "5"
    assert total(endpoint, duration="5") == D(five)
    assert total(endpoint, duration="10") == D(ten)
    with pytest.raises(InvalidArguments, match="duration"):
        total(endpoint, duration=10)  # the schema's enum is of strings


def test_hailuo_2_3() -> None:
    # standard: "$0.28 per 6 second video generation, and a $0.56 per 10 second"
    e = "fal-ai/minimax/hailuo-2.3/standard/text-to-video"
    assert total(e) == D("0.28")
    assert total(e, duration="10") == D("0.56")
    # pro: "Your request will cost $0.49 per video generation."
    assert total("fal-ai/minimax/hailuo-2.3/pro/text-to-video", prompt_optimizer=False) == D("0.49")


def test_stable_audio_2_5_per_audio() -> None:
    # fal.ai/models/fal-ai/stable-audio-25/text-to-audio/llms.txt: "Price: $0.2 per audios"
    e = "fal-ai/stable-audio-25/text-to-audio"
    assert total(e) == D("0.20")
    assert total(e, seconds_total=10, num_inference_steps=4) == D("0.20")


def test_unknown_parameters_are_refused_and_required_ones_checked() -> None:
    with pytest.raises(InvalidArguments, match="unknown parameter"):
        TABLE.quote("fal-ai/flux-1/dev", {"num_imgs": 2})
    endpoint = TABLE.endpoint("fal-ai/kling-video/v2.5-turbo/pro/image-to-video")
    with pytest.raises(InvalidArguments, match="image_url"):
        endpoint.normalize_arguments({"prompt": "a cat"}, strict=True)


def test_the_default_table_prices_them_beside_magi() -> None:
    table = default_table()  # the packaged table, as the guard and the CLI use it
    assert table.quote("fal-ai/magi/image-to-video", {}).total == D("0.80")
    assert table.quote("fal-ai/minimax/hailuo-2.3/pro/text-to-video", {}).total == D("0.49")
    assert len(table.endpoints) == 5 + 24
    assert table.quote("fal-ai/veo3", {}).total == D("3.20")


@pytest.mark.parametrize(
    ("endpoint", "five", "ten"),
    [
        # fal.ai/models/<endpoint>/llms.txt, each: "For 5s video your request will cost $1.40.
        # For every aditional second you will be charged $0.28.": 1.40; 1.40 + 5 x 0.28 = 2.80
        ("fal-ai/kling-video/v2/master/text-to-video", "1.40", "2.80"),
        ("fal-ai/kling-video/v2.1/master/text-to-video", "1.40", "2.80"),
        ("fal-ai/kling-video/v2.1/master/image-to-video", "1.40", "2.80"),
        # "For 5s video your request will cost $0.49. For every additional second you will be
        # charged $0.098.": 0.49; 0.49 + 5 x 0.098 = 0.98
        ("fal-ai/kling-video/v2.1/pro/image-to-video", "0.49", "0.98"),
    ],
)
def test_kling_master_and_pro(endpoint: str, five: str, ten: str) -> None:
    assert total(endpoint) == D(five)
    assert total(endpoint, duration="10", cfg_scale=0.7) == D(ten)


def test_veo3_a_second_with_and_without_audio() -> None:
    # fal.ai/models/fal-ai/veo3/llms.txt: "you will be charged $0.20 (audio off) or $0.40
    # (audio on). For example, a 5s video with audio on will cost $2." (5 x 0.40 = 2; the
    # schema offers 4, 6 and 8 s)
    e = "fal-ai/veo3"
    assert total(e) == D("3.20")  # defaults: 8 s, audio on: 8 x 0.40
    assert total(e, duration="4s", generate_audio=False) == D("0.80")  # 4 x 0.20
    assert total(e, duration="6s", generate_audio=True) == D("2.40")  # 6 x 0.40
    assert total(e, duration="8s", resolution="1080p", generate_audio=False) == D(
        "1.60"
    )  # 8 x 0.20
    with pytest.raises(InvalidArguments, match="duration"):
        total(e, duration="5s")


def test_recraft_v4_1_per_image() -> None:
    # fal.ai/models/fal-ai/recraft/v4.1/text-to-image/llms.txt: "Price: $0.04 per images";
    # no num_images in its schema: one image a request, whatever its size
    e = "fal-ai/recraft/v4.1/text-to-image"
    assert total(e) == D("0.04")
    assert total(e, image_size={"width": 2048, "height": 2048}, colors=[{"r": 1}]) == D("0.04")


def test_hailuo_2_3_image_to_video() -> None:
    # standard: "$0.28 per 6 second video generation, and a $0.56 per 10 second"
    e = "fal-ai/minimax/hailuo-2.3/standard/image-to-video"
    assert total(e) == D("0.28")
    assert total(e, duration="10") == D("0.56")
    # fast standard: "$0.19 per 6 second video generation, and a $0.32 per 10 second"
    e = "fal-ai/minimax/hailuo-2.3-fast/standard/image-to-video"
    assert total(e) == D("0.19")
    assert total(e, duration="10", prompt_optimizer=False) == D("0.32")
    # pro: "Your request will cost $0.49 per video generation."
    assert total("fal-ai/minimax/hailuo-2.3/pro/image-to-video") == D("0.49")
    # fast pro: "Price: $0.33 per videos"
    assert total("fal-ai/minimax/hailuo-2.3-fast/pro/image-to-video") == D("0.33")
    with pytest.raises(InvalidArguments, match="duration"):
        total("fal-ai/minimax/hailuo-2.3/pro/image-to-video", duration="6")  # not in its schema


@pytest.mark.parametrize("endpoint", ["fal-ai/minimax-music/v2", "fal-ai/minimax-music/v1.5"])
def test_minimax_music_per_generation(endpoint: str) -> None:
    # fal.ai/models/<endpoint>/llms.txt: "Price: $0.03 per generations"
    assert total(endpoint, audio_setting={"format": "mp3"}) == D("0.03")
    required = TABLE.endpoint(endpoint)
    with pytest.raises(InvalidArguments, match="lyrics_prompt"):
        required.normalize_arguments({"prompt": "indie folk"}, strict=True)


def test_minimax_speech_02_turbo_per_1000_characters() -> None:
    # fal.ai/models/fal-ai/minimax/speech-02-turbo/llms.txt: "Your request will cost $0.06 per
    # 1000 character."; text: "max 5000 characters, minimum 1 non-whitespace character". A
    # partial block of 1000 is billed whole (fal does not say; up never under-charges).
    e = "fal-ai/minimax/speech-02-turbo"
    assert total(e, text="Hello world!") == D("0.06")  # 12 characters: 1 block x 0.06
    assert total(e, text="a" * 1000) == D("0.06")  # exactly 1 block
    assert total(e, text="a" * 1001) == D("0.12")  # 1.001 blocks, up to 2: 2 x 0.06
    assert total(e, text="a" * 5000) == D("0.30")  # the most it takes: 5 x 0.06
    # characters are code points: 1000 x "é" (2 bytes each in UTF-8) is 1000, 1 block; 1000 x
    # an emoji (2 UTF-16 units each) is 1000 too
    assert total(e, text="\u00e9" * 1000) == D("0.06")
    assert total(e, text="\U0001f600" * 1000) == D("0.06")
    for text in ("", "a" * 5001):  # the schema's bounds: 1 to 5000 characters
        with pytest.raises(InvalidArguments, match=r"text.*1 to 5000 characters"):
            total(e, text=text)
    # the text is what is priced: a quote without it is refused, strict or not
    with pytest.raises(InvalidArguments, match=r"text.*required"):
        total(e)
    quote = TABLE.quote(e, {"text": "a" * 1500, "output_format": "url"})
    assert str(quote).startswith(f"{e} costs 0.12 USD with text=1500 characters (")


def test_minimax_speech_2_8_hd_prices_its_prompt() -> None:
    # fal.ai/models/fal-ai/minimax/speech-2.8-hd/llms.txt: "Price: $0.1 per 1000 characters";
    # its text input is `prompt`
    e = "fal-ai/minimax/speech-2.8-hd"
    assert total(e, prompt="Hi (laughs)") == D("0.10")  # 11 characters: 1 block x 0.10
    assert total(e, prompt="x" * 2500) == D("0.30")  # 2.5 blocks, up to 3: 3 x 0.10
    assert total(e, prompt="x" * 10_000, language_boost="English") == D("1.00")  # 10 x 0.10
    with pytest.raises(InvalidArguments, match="language_boost"):
        total(e, prompt="Hi", language_boost="Klingon")


def test_chatterbox_hd_prices_its_default_text() -> None:
    # fal.ai/models/resemble-ai/chatterboxhd/text-to-speech/llms.txt: "Your request will cost
    # $0.04 per 1000 characters."; text is optional, its default the 269-character Maximus
    # speech quoted on the page: 1 block x 0.04
    e = "resemble-ai/chatterboxhd/text-to-speech"
    assert total(e) == D("0.04")
    assert total(e, text="a" * 3001, voice="Aurora") == D("0.16")  # 3.001 blocks, up to 4
