"""Money: ``decimal.Decimal`` at every public edge, integer micro-USD inside.

One micro-USD is 1e-6 USD. Conversions that could lose value round up (a hold must never be smaller
than the price); floats are refused everywhere.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
_MICRO = Decimal("0.000001")


def to_decimal(value: object, *, what: str = "amount") -> Decimal:
    """Read a money amount given as Decimal, int or a decimal string; refuse floats and bools."""
    if isinstance(value, bool | float):
        raise ValueError(
            f"{what}={value!r} is not allowed: give a Decimal, an int or a string such as '10.00'"
            " (floats cannot hold cents exactly)"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip().lstrip("$"))
        except InvalidOperation:
            raise ValueError(
                f"{what}={value!r} is not allowed: expected a decimal amount such as '10.00'"
            ) from None
    else:
        raise ValueError(
            f"{what}={value!r} is not allowed: give a Decimal, an int or a string such as '10.00'"
        )
    if not result.is_finite():
        raise ValueError(f"{what}={value!r} is not allowed: the amount must be a finite number")
    return result


def to_micros(amount: Decimal) -> int:
    """USD as Decimal to integer micro-USD, rounding any fraction of a micro-USD up."""
    return int((amount * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def from_micros(micros: int) -> Decimal:
    """Integer micro-USD to USD as Decimal, exact, with at least two decimal places."""
    return normalize(Decimal(micros).scaleb(-6))


def normalize(amount: Decimal) -> Decimal:
    """Drop trailing zeros beyond the cents, keep at least two places: 0.8 -> 0.80, 0.0025 stays."""
    if not amount.is_finite():
        return amount
    reduced = amount.normalize()
    exponent = reduced.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        return reduced.quantize(Decimal("0.01"))
    return reduced


def format_usd(amount: Decimal) -> str:
    """'0.80', '1.20', '0.0025': at least two places, never scientific notation."""
    return f"{normalize(amount):f}"
