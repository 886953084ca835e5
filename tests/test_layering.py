"""Layered price tables: a configuration or --pricing names several, the first that prices an
endpoint wins, an entry still needing a ceiling gives way to one that has it, and
`falbudget endpoints` says which table priced each. Expectations by hand."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from falbudget.cli.app import main
from falbudget.errors import ConfigurationError
from falbudget.guard.config import load_config
from falbudget.pricing import packaged_table_path
from falbudget.pricing.loader import layered_table

MAGI = "fal-ai/magi/image-to-video"
FLUX = "fal-ai/flux/dev"
LLM = "fal-ai/any-llm"


def table(version: str, endpoints: str) -> str:
    return (
        f'schema_version: 1\ntable_version: "{version}"\neffective_date: 2026-12-01\n'
        f"currency: USD\nendpoints:\n{endpoints}"
    )


def flat(name: str, amount: str) -> str:
    return (
        f"  {name}:\n    source_url: https://fal.ai/models/{name}\n"
        f"    price_read_on: 2026-12-06\n    inputs: {{prompt: {{type: string}}}}\n"
        f"    rules: [{{name: unit price, kind: base, amount: '{amount}'}}]\n"
    )


def after_call(name: str, ceiling: str | None) -> str:
    cap = f"ceiling: '{ceiling}'" if ceiling else "description: no ceiling yet"
    return (
        f"  {name}:\n    source_url: https://fal.ai/models/{name}\n"
        f"    price_read_on: 2026-12-06\n    inputs: {{prompt: {{type: string}}}}\n"
        f"    after_call: {{{cap}}}\n"
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    mine = tmp_path / "mine.yaml"
    mine.write_text(table("mine-1", after_call(LLM, "0.40") + flat(FLUX, "0.05")))
    synced = tmp_path / "fal-sync.yaml"
    synced.write_text(
        table("fal-sync-2026-12-06", after_call(LLM, None) + flat(FLUX, "0.025") + flat(MAGI, "9"))
    )
    return {"mine": mine, "synced": synced}


def test_the_first_table_that_prices_an_endpoint_wins(files: dict[str, Path]) -> None:
    mine, synced = str(files["mine"]), str(files["synced"])
    layered = layered_table([mine, synced])
    assert layered.quote(FLUX, {}).total == Decimal("0.05")  # mine, listed first
    assert layered.quote(LLM, {}).total == Decimal("0.40")
    assert layered.quote(LLM, {}).is_ceiling
    assert layered.priced_by == {FLUX: mine, LLM: mine, MAGI: synced}
    assert layered.table_version == "mine-1 + fal-sync-2026-12-06"
    # the synced table first: it prices FLUX, but its LLM entry has no ceiling, so mine wins
    reverse = layered_table([synced, mine])
    assert reverse.quote(FLUX, {}).total == Decimal("0.025")
    assert reverse.quote(LLM, {}).total == Decimal("0.40")
    assert reverse.source_of(LLM) == mine and reverse.source_of(FLUX) == synced
    # a quote records the table that priced it
    assert reverse.quote(LLM, {}).table_version == "mine-1"


def test_the_hand_written_magi_rules_stay_authoritative_when_listed_first(
    files: dict[str, Path],
) -> None:
    layered = layered_table([str(packaged_table_path()), str(files["synced"])])
    # MAGI-1 defaults: 0.80 (docs/pricing.md), not the synced table's 9
    assert layered.quote(MAGI, {}).total == Decimal("0.80")
    assert layered.source_of(MAGI) == str(packaged_table_path())
    assert layered.endpoints[LLM].needs_ceiling  # nothing gave it a ceiling


def test_a_configuration_names_several_tables_relative_to_itself(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "falbudget.yaml"
    config.write_text("ledger: memory://\npricing: [mine.yaml, fal-sync.yaml]\n")
    guard = load_config(str(config)).build_guard()
    assert guard.table.quote(FLUX, {}).total == Decimal("0.05")
    assert guard.table.source_of(MAGI) == str(files["synced"])
    guard.close()
    config.write_text("ledger: memory://\npricing: []\n")
    with pytest.raises(ConfigurationError, match="pricing"):
        load_config(str(config))


def test_the_cli_layers_repeated_pricing_options_and_says_which_table_priced_each(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    mine, synced = str(files["mine"]), str(files["synced"])
    assert main(["endpoints", "--pricing", mine, "--pricing", synced]) == 0
    out = capsys.readouterr().out
    assert f"{FLUX}\nprice 0.05 - 0.05 USD" in out
    assert f"priced by {mine}\n" in out and f"priced by {synced}\n" in out
    assert main(["quote", "--pricing", synced, "--pricing", mine, LLM, "--format", "json"]) == 0
    assert '"ceiling": true' in capsys.readouterr().out
    assert main(["endpoints", "--pricing", mine, "--format", "json"]) == 0
    assert '"table"' not in capsys.readouterr().out  # one table: as before
