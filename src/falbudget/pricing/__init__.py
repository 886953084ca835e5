"""Price tables and quotes: pure, no I/O beyond reading the table file once."""

from falbudget.pricing.engine import (
    InputRule,
    LineItem,
    PricedEndpoint,
    PriceTable,
    Quote,
    split_rules_version,
)
from falbudget.pricing.loader import default_table, load_table, packaged_table_path, parse_table

__all__ = [
    "InputRule",
    "LineItem",
    "PriceTable",
    "PricedEndpoint",
    "Quote",
    "default_table",
    "load_table",
    "packaged_table_path",
    "parse_table",
    "split_rules_version",
]
