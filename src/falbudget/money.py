"""Money: ``decimal.Decimal`` at every public edge, integer micro-USD inside.

One micro-USD is 1e-6 USD. Conversions that could lose value round up (a hold must never be smaller
than the price); floats are refused everywhere.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
MAX_DIGITS = 4000
"""The most digits :func:`to_micros` returns (a ledger keeps 19; Python's int() of text, 4300)."""
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
    """USD as Decimal to integer micro-USD, rounding any fraction of a micro-USD up, exactly
    whatever the number of digits: integer arithmetic on the digits, never the decimal context
    (whose 28 digits would round 0.00000100000000000000000000000000001 to 0.000001 first).
    ValueError for an amount that is not finite or has more than MAX_DIGITS digits of micro-USD
    before the point."""
    if not amount.is_finite():
        raise ValueError(f"amount={amount!r} is not allowed: the amount must be a finite number")
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    shift = exponent + 6  # micro-USD = USD x 10**6
    if not any(digits):
        return 0
    if shift + len(digits) > MAX_DIGITS:
        raise ValueError(
            f"amount={amount!r} is not allowed: more than {MAX_DIGITS} digits of micro-USD"
        )
    if -shift >= len(digits):  # below one micro-USD
        whole, fraction = 0, True
    else:
        coefficient = int(Decimal((0, digits, 0)))  # exact: an integral Decimal converts exactly
        scale: int = 10 ** abs(shift)
        if shift >= 0:
            whole, fraction = coefficient * scale, False
        else:
            whole, rest = divmod(coefficient, scale)
            fraction = rest != 0
    if sign:
        return -whole  # the ceiling of a negative amount drops its fraction
    return whole + 1 if fraction else whole


def from_micros(micros: int) -> Decimal:
    """Integer micro-USD to USD as Decimal, exact, with at least two decimal places."""
    sign, digits, exponent = Decimal(micros).as_tuple()
    assert isinstance(exponent, int)
    return normalize(Decimal((sign, digits, exponent - 6)))


def normalize(amount: Decimal) -> Decimal:
    """Drop trailing zeros beyond the cents, keep at least two places: 0.8 -> 0.80, 0.0025 stays.
    Exact whatever the number of digits (``Decimal.normalize`` would round to the context's 28)."""
    if not amount.is_finite():
        return amount
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0:
        kept -= 1
    exponent += len(digits) - kept
    if not any(digits):
        return Decimal((sign, (0,), -2))
    if exponent > -2:
        return Decimal((sign, digits[:kept] + (0,) * (exponent + 2), -2))
    return Decimal((sign, digits[:kept], exponent))


def format_usd(amount: Decimal) -> str:
    """'0.80', '1.20', '0.0025': at least two places, never scientific notation."""
    return f"{normalize(amount):f}"
