"""Load a price table file: parse YAML, validate with pydantic once, compile for the engine."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falbudget.errors import PriceTableError
from falbudget.pricing import engine
from falbudget.pricing.engine import InputRule, PricedEndpoint, PriceRule, PriceTable, _json_key

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.pricing.models import EndpointModel, InputSpec, Rule

PRICING_ENV = "FALBUDGET_PRICING"
_cache: dict[str, PriceTable] = {}
_cache_lock = threading.Lock()


def _packaged(name: str) -> Path:
    """A data file shipped inside the package: the file beside this module when the package is
    a directory, as it is once installed (no import of importlib.resources: a quote's process
    starts sooner), else through it."""
    beside = Path(__file__).resolve().parent.parent / "data" / name
    if beside.is_file():
        return beside
    from importlib import resources

    return Path(str(resources.files("falbudget") / "data" / name))


@functools.cache
def packaged_table_path() -> Path:
    """The pricing.yaml shipped inside the package (a copy of the repository's top-level file)."""
    return _packaged("pricing.yaml")


def load_table(path: str | os.PathLike[str]) -> PriceTable:
    """Read, validate and compile the price table at ``path``.

    Raises PriceTableError naming the file, the endpoint and the field that is wrong.
    """
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise PriceTableError(f"cannot read the price table: {exc.strerror}", file=name) from None
    except ValueError:  # a NUL in the name, from a configuration file
        raise PriceTableError(
            "cannot read the price table: the path holds a NUL", file=name
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    cached = _read_cached(digest, name)
    if cached is not None:
        return cached
    table = parse_table(data, source=name)
    _write_cached(table)
    return table


# -- the compiled-table cache -------------------------------------------------------------------
CACHE_ENV = "FALBUDGET_CACHE_DIR"
"""Where compiled price tables are kept (default: the user's cache directory, platformdirs);
set to an empty string, no cache is read or written."""
_CACHE_FORMAT = 1
_CODE_FILES = ("engine.py", "loader.py", "models.py", "../money.py", "../errors.py")
"""The code a compiled table depends on: a change to any of them makes every entry stale."""


def cache_directory() -> str | None:
    """The directory of the compiled-table cache, or None when ``FALBUDGET_CACHE_DIR`` is set
    to an empty string."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return configured or None
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("falbudget"), "tables")


@functools.cache
def _code_digest() -> str:
    """A digest of the code that compiles and reads a table, the cache format and Python's
    version: an entry made by other code is never read."""
    import sys

    h = hashlib.sha256(f"{_CACHE_FORMAT}|{sys.version_info[:2]}".encode())
    here = Path(__file__).resolve().parent
    for name in _CODE_FILES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _cache_file(digest: str) -> str | None:
    directory = cache_directory()
    if directory is None:
        return None
    return os.path.join(directory, f"{digest}-{_code_digest()}.pickle")


def _private(stat: os.stat_result) -> bool:
    """Owned by this user and writable by no one else (what may be unpickled)."""
    return stat.st_uid == os.getuid() and not stat.st_mode & 0o022


def _read_cached(digest: str, source: str) -> PriceTable | None:
    """The compiled table of the file whose sha256 is ``digest``, if the cache has a sound
    entry for it: the directory and the entry private to this user, the entry a table with
    that digest. Anything else (missing, stale, unreadable, foreign) is ignored."""
    import pickle

    try:
        path = _cache_file(digest)
        if path is None or not _private(os.stat(os.path.dirname(path))):
            return None
        with open(path, "rb") as handle:
            if not _private(os.fstat(handle.fileno())):
                return None
            table = pickle.load(handle)
    except Exception:  # a missing or damaged entry is a miss, never an error
        return None
    if not isinstance(table, PriceTable) or table.sha256 != digest:
        return None
    if any(endpoint.versions for endpoint in table.endpoints.values()):
        endpoints = {
            name: _in_effect_today(endpoint.versions) if endpoint.versions else endpoint
            for name, endpoint in table.endpoints.items()
        }
        table = dataclasses.replace(table, endpoints=endpoints)
    return table if table.source == source else dataclasses.replace(table, source=source)


def _write_cached(table: PriceTable) -> None:
    """Keep ``table`` for the next process: written to a private temporary file, then renamed
    over the entry, so a reader sees a whole entry or none. Failures are ignored."""
    import pickle
    import tempfile

    try:
        path = _cache_file(table.sha256)
        if path is None:
            return
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private(os.stat(directory)):
            return
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pickle")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(table, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except Exception:  # the cache only saves time: a table that cannot be kept still quotes
        return


def parse_table(data: bytes | str, *, source: str = "<string>") -> PriceTable:
    """Validate and compile a price table given as YAML text."""
    import yaml
    from pydantic import ValidationError

    from falbudget.pricing.models import TableModel

    raw = data.encode() if isinstance(data, str) else data
    try:
        document = yaml.load(raw, Loader=_unique_key_loader())  # a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise PriceTableError(f"not valid YAML{where}: {problem}", file=source) from None
    except RecursionError:
        raise PriceTableError("not readable YAML: nested too deeply", file=source) from None
    if not isinstance(document, dict):
        raise PriceTableError("the table must be a YAML mapping at the top level", file=source)
    try:
        model = TableModel.model_validate(document)
    except ValidationError as exc:
        raise _table_error(exc, source) from None
    digest = hashlib.sha256(raw).hexdigest()
    endpoints = {
        name: _compile_endpoint(name, spec, model.table_version, digest, model.currency)
        for name, spec in model.endpoints.items()
    }
    return PriceTable(
        endpoints=endpoints,
        table_version=model.table_version,
        effective_date=model.effective_date.isoformat(),
        currency=model.currency,
        sha256=digest,
        source=source,
        schema_version=model.schema_version,
    )


def _table_error(exc: Any, source: str) -> PriceTableError:
    """The first pydantic error, said as file, endpoint and dotted field path."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    endpoint = None
    if len(loc) >= 2 and loc[0] == "endpoints":
        endpoint = loc[1]
        loc = loc[2:]
    # drop the discriminator tag pydantic inserts for tagged unions: rules.1.per_unit.amount,
    # versions.0.rules.1.per_unit.amount
    for at in (0, 2):
        if (
            len(loc) >= at + 3
            and loc[at] == "rules"
            and loc[at + 2]
            in ("base", "per_unit", "lookup", "proportional", "megapixels", "frames", "characters")
        ):
            loc = loc[: at + 2] + loc[at + 3 :]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (not part of the table format)"
    elif error["type"] == "value_error":
        # our own validators name the value; those on a whole input, rule or endpoint start
        # their message with the key at fault ("default: ...", "rules.1.input: ...")
        match = _SUBFIELD.match(message)
        if match:
            loc.extend(match.group(1).split("."))
            message = message[match.end() :]
    elif (
        "input" in error
        and error["type"] != "missing"
        and not isinstance(error["input"], dict | list)
    ):
        message = f"{message} (got {error['input']!r})"[:300]
    field = ".".join(loc) if loc else None
    return PriceTableError(message, file=source, endpoint=endpoint, field=field)


_SUBFIELD = re.compile(r"([A-Za-z_][\w.]*): ")


def yaml_loader() -> Any:
    """The safe YAML loader of price tables, for every YAML file falbudget reads (the guard's
    configuration too): a key given twice in one mapping is a ``yaml.YAMLError`` naming it."""
    return _unique_key_loader()


def _unique_key_loader() -> Any:
    """A safe YAML loader that refuses a key given twice in one mapping (YAML would keep the last
    silently, so a second ``amount:`` line would change a price without a word)."""
    global _UniqueKeyLoader
    if _UniqueKeyLoader is None:
        import yaml

        base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class UniqueKeyLoader(base):  # type: ignore[misc]
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *shared` may repeat keys
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        duplicate = key in seen
                        seen.add(key)
                    except TypeError:  # an unhashable key: the base class reports it
                        continue
                    if duplicate:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            f"duplicate key {key!r} (each key may appear once)",
                            key_node.start_mark,
                        )
                return super().construct_mapping(node, deep=deep)

            def construct_yaml_timestamp(self, node: Any) -> Any:
                """A date such as 2027-02-30 is a YAML error with its line, not a ValueError."""
                try:
                    return super().construct_yaml_timestamp(node)
                except ValueError as exc:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{node.value!r} is not a valid date ({exc})", node.start_mark
                    ) from None

        UniqueKeyLoader.add_constructor(
            "tag:yaml.org,2002:timestamp", UniqueKeyLoader.construct_yaml_timestamp
        )
        _UniqueKeyLoader = UniqueKeyLoader
    return _UniqueKeyLoader


_UniqueKeyLoader: Any = None


def _compile_endpoint(
    name: str, spec: EndpointModel, table_version: str, digest: str, currency: str
) -> PricedEndpoint:
    """An endpoint compiled for the engine; with dated versions, each version compiled on its own
    and the endpoint itself a copy of the version in effect today (else the earliest)."""
    if spec.after_call is not None:
        ceiling = spec.after_call.ceiling
        description = (
            spec.after_call.description or "a ceiling: the price is known only after the call"
        )
        return PricedEndpoint(
            name=name,
            title=spec.title,
            source_url=str(spec.source_url),
            price_read_on=spec.price_read_on.isoformat(),
            inputs=_compile_inputs(spec.inputs),
            rules=()
            if ceiling is None
            else (PriceRule("ceiling", "ceiling", amount=ceiling, description=description),),
            table_version=table_version,
            table_sha256=digest,
            currency=currency,
            after_call=True,
        )
    if spec.versions is None:
        assert spec.rules is not None  # the model requires rules or versions
        inputs = _compile_inputs(spec.inputs)
        return PricedEndpoint(
            name=name,
            title=spec.title,
            source_url=str(spec.source_url),
            price_read_on=spec.price_read_on.isoformat(),
            inputs=inputs,
            rules=_compile_rules(spec.rules, inputs),
            table_version=table_version,
            table_sha256=digest,
            currency=currency,
        )
    versions = []
    for version in spec.versions:
        inputs = _compile_inputs(spec.inputs if version.inputs is None else version.inputs)
        source_url = spec.source_url if version.source_url is None else version.source_url
        read_on = spec.price_read_on if version.price_read_on is None else version.price_read_on
        versions.append(
            PricedEndpoint(
                name=name,
                title=spec.title,
                source_url=str(source_url),
                price_read_on=read_on.isoformat(),
                inputs=inputs,
                rules=_compile_rules(version.rules, inputs),
                table_version=table_version,
                table_sha256=digest,
                currency=currency,
                effective_from=version.effective_from.isoformat(),
            )
        )
    return _in_effect_today(versions)


def _in_effect_today(versions: Sequence[PricedEndpoint]) -> PricedEndpoint:
    """The dated version in effect today (the first before any), carrying all ``versions``: an
    endpoint's top-level inputs and rules are today's, for readers that do not ask for a moment
    (``endpoints``, ``pricing diff``). A compiled table read back from the cache on another day
    is given today's again."""
    today = engine._today()
    current = versions[0]
    for version in versions:
        if dt.date.fromisoformat(version.effective_from or "").toordinal() <= today:
            current = version
    return dataclasses.replace(current, versions=tuple(versions))


def _compile_inputs(specs: Mapping[str, InputSpec]) -> dict[str, InputRule]:
    inputs = {}
    for input_name, item in specs.items():
        enum = tuple(item.enum) if item.enum is not None else None
        inputs[input_name] = InputRule(
            name=input_name,
            type=item.type,
            required=item.required,
            default=item.default,
            nullable=item.nullable,
            enum=enum,
            minimum=item.minimum,
            maximum=item.maximum,
            min_length=item.min_length,
            max_length=item.max_length,
            description=item.description,
            _enum_set=frozenset(enum or ()),
        )
    return inputs


def _compile_rules(specs: list[Rule], inputs: Mapping[str, InputRule]) -> tuple[PriceRule, ...]:
    from falbudget.pricing.models import (
        BaseRule,
        CharactersRule,
        FramesRule,
        LookupRule,
        MegapixelsRule,
        PerUnitRule,
        ProportionalRule,
    )

    rules = []
    for rule in specs:
        if isinstance(rule, BaseRule):
            rules.append(
                PriceRule(rule.name, "base", amount=rule.amount, description=rule.description)
            )
        elif isinstance(rule, PerUnitRule):
            rules.append(
                PriceRule(
                    rule.name,
                    "per_unit",
                    input=rule.input,
                    amount=rule.amount,
                    unit=rule.unit,
                    above=rule.above,
                    rounding=rule.rounding,
                    unit_name=rule.unit_name,
                    description=rule.description,
                )
            )
        elif isinstance(rule, LookupRule):
            enum = inputs[rule.input].enum or ()
            factors: Mapping[str, Decimal] = {
                _json_key(v): rule.factors[_json_key(v)] for v in enum
            }
            rules.append(
                PriceRule(
                    rule.name,
                    "lookup",
                    input=rule.input,
                    factors=factors,
                    description=rule.description,
                )
            )
        elif isinstance(rule, MegapixelsRule):
            rules.append(
                PriceRule(
                    rule.name,
                    "megapixels",
                    input=rule.input,
                    amount=rule.amount,
                    per=rule.pixels,
                    rounding=rule.rounding,
                    presets={k: (v[0], v[1]) for k, v in rule.presets.items()},
                    unit_name="megapixel",
                    description=rule.description,
                )
            )
        elif isinstance(rule, CharactersRule):
            rules.append(
                PriceRule(
                    rule.name,
                    "characters",
                    input=rule.input,
                    amount=rule.amount,
                    per=rule.per,
                    rounding=rule.rounding,
                    unit_name=rule.unit_name,
                    description=rule.description,
                )
            )
        elif isinstance(rule, FramesRule):
            rules.append(
                PriceRule(
                    rule.name,
                    "frames",
                    input=rule.input,
                    amount=rule.amount,
                    rate_input=rule.rate_input,
                    per=rule.rate or 1,
                    rounding=rule.rounding,
                    unit_name=rule.unit_name,
                    description=rule.description,
                )
            )
        elif isinstance(rule, ProportionalRule):
            rules.append(
                PriceRule(
                    rule.name,
                    "proportional",
                    input=rule.input,
                    per=rule.per,
                    floor=rule.floor,
                    unit_name=rule.unit_name,
                    description=rule.description,
                )
            )
    return tuple(rules)


def table_path_from_env() -> str:
    """``FALBUDGET_PRICING`` when set, else the packaged table."""
    return os.environ.get(PRICING_ENV) or _packaged_table_name()


@functools.cache
def _packaged_table_name() -> str:
    return str(packaged_table_path())


_DEFAULT = "\0default"
"""The key of the default table in ``_cache`` (no path holds a NUL)."""


def default_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The table at ``path``, loaded once per process and path. Without a path, the default
    table: the one ``FALBUDGET_PRICING`` names, else the packaged one, chosen at the first call
    of the process (``falbudget.quote()`` reads nothing from the environment per quote)."""
    if path is None:
        table = _cache.get(_DEFAULT)
        if table is None:
            table = _cache[_DEFAULT] = default_table(table_path_from_env())
        return table
    key = os.fspath(path)
    table = _cache.get(key)
    if table is None:
        with _cache_lock:
            table = _cache.get(key)
            if table is None:
                table = load_table(key)
                _cache[key] = table
    return table


def layered_table(paths: list[str] | tuple[str, ...]) -> PriceTable:
    """Several tables as one: each endpoint from the first table that prices it (an entry
    priced only after the call and without a ceiling does not price it: a later table's entry
    wins, else that entry stays, needing a ceiling). ``priced_by`` says which file priced each.
    One path is that table itself."""
    names = [os.fspath(p) for p in paths]
    if not names:
        raise PriceTableError("no price table named: pricing needs at least one file")
    if len(names) == 1:
        return default_table(names[0])
    tables = [default_table(name) for name in names]
    endpoints: dict[str, PricedEndpoint] = {}
    priced_by: dict[str, str] = {}
    for table in tables:
        for name, endpoint in table.endpoints.items():
            known = endpoints.get(name)
            if known is None or (known.needs_ceiling and not endpoint.needs_ceiling):
                endpoints[name] = endpoint
                priced_by[name] = table.source
    digest = hashlib.sha256("\n".join(t.sha256 for t in tables).encode()).hexdigest()
    return PriceTable(
        endpoints=dict(sorted(endpoints.items())),
        table_version=" + ".join(t.table_version for t in tables),
        effective_date=min(t.effective_date for t in tables),
        currency=tables[0].currency,
        sha256=digest,
        source=", ".join(t.source for t in tables),
        schema_version=tables[0].schema_version,
        priced_by=priced_by,
    )
