"""List queries as Neutron takes them: filters on any attribute, `fields=`, sorting and pagination.

    ?network_id=N&network_id=M     either value (repeated keys OR together)
    ?fixed_ips=ip_address=10.0.0.5 a port with that fixed IP (also subnet_id=...)
    ?fields=id&fields=name         only those attributes
    ?sort_key=name&sort_dir=desc   ordering (always ends with id, so it is total)
    ?limit=2&marker=ID             the page after ID; `page_reverse=true` the page before it
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from dfflow.api.attributes import Resource
from dfflow.api.errors import bad_request

PAGING = ("fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass
class Query:
    filters: dict[str, list[Any]] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    limit: int | None = None
    marker: str | None = None
    page_reverse: bool = False
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (key, ascending)
    passthrough: list[tuple[str, str]] = field(default_factory=list)  # filters, fields, sorting: for links


@dataclass
class Page:
    items: list[dict[str, Any]]
    links: list[tuple[str, str, bool]]  # (rel, marker, page_reverse)


def parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise bad_request(name, f"'{value}' is not a boolean")


def _types(schema: dict[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return [kinds] if isinstance(kinds, str) else list(kinds)


MAX_VALUE = 255  # longest filter value or marker (no attribute is longer)


def _filter_value(name: str, schema: dict[str, Any], raw: str) -> Any:
    if len(raw) > MAX_VALUE:
        raise bad_request(name, f"longer than {MAX_VALUE} characters")
    kinds = _types(schema)
    if "boolean" in kinds:
        return parse_bool(name, raw)
    if "integer" in kinds:
        try:
            return int(raw.strip())
        except ValueError:
            raise bad_request(name, f"'{raw}' is not an integer") from None
    if "array" in kinds and name == "fixed_ips":
        key, sep, value = raw.partition("=")
        if not sep or key not in ("ip_address", "subnet_id"):
            raise bad_request(name, f"'{raw}' is not ip_address=<IP> or subnet_id=<ID>")
        return (key, value)
    return raw


def parse_query(resource: Resource, params: list[tuple[str, str]]) -> Query:
    query = Query()
    filters = resource.filters()
    sort_keys: list[str] = []
    sort_dirs: list[str] = []
    for name, raw in params:
        if name == "fields":
            query.fields.extend(f for f in raw.split(",") if f)
            query.passthrough.append((name, raw))
        elif name == "limit":
            try:
                query.limit = int(raw)
            except ValueError:
                raise bad_request("limit", f"'{raw}' is not an integer") from None
            if query.limit < 0:
                raise bad_request("limit", "must be 0 (no limit) or greater")
        elif name == "marker":
            if len(raw) > MAX_VALUE:
                raise bad_request("marker", f"longer than {MAX_VALUE} characters")
            query.marker = raw
        elif name == "page_reverse":
            query.page_reverse = parse_bool(name, raw)
        elif name in ("sort_key", "sort_dir"):
            (sort_keys if name == "sort_key" else sort_dirs).append(raw)
            query.passthrough.append((name, raw))
        elif name in filters:
            query.filters.setdefault(name, []).append(_filter_value(name, filters[name], raw))
            query.passthrough.append((name, raw))
        else:
            raise bad_request(name, f"'{name}' is not an attribute of {resource.plural} one can filter on")
    if sort_dirs and len(sort_dirs) != len(sort_keys):
        raise bad_request("sort_dir", "give one sort_dir per sort_key, or none")
    for i, key in enumerate(sort_keys):
        attr = resource.attr(key)
        if attr is None or {"array", "object"} & set(_types(attr.out_schema)):
            raise bad_request("sort_key", f"cannot sort {resource.plural} by '{key}'")
        direction = sort_dirs[i] if sort_dirs else "asc"
        if direction not in ("asc", "desc"):
            raise bad_request("sort_dir", f"'{direction}' is not asc or desc")
        query.sort.append((key, direction == "asc"))
    return query


def _matches(item: dict[str, Any], name: str, wanted: list[Any]) -> bool:
    if name in ("ip_address", "subnet_id") and name not in item:  # a port's pseudo-filters
        return any(fip.get(name) in wanted for fip in item.get("fixed_ips", ()))
    value = item.get(name)
    if name == "fixed_ips":
        return any(fip.get(key) == want for key, want in wanted for fip in value or ())
    if isinstance(value, list):
        return any(v in wanted for v in value)
    if value is None:
        return "" in wanted
    if isinstance(value, bool):
        return any(w is value for w in wanted)
    return value in wanted


def _sort_value(value: Any) -> tuple[bool, Any]:
    return (value is not None, "" if value is None else value)


def run(query: Query, items: list[dict[str, Any]]) -> Page:
    found = [i for i in items if all(_matches(i, n, w) for n, w in query.filters.items())]
    found.sort(key=lambda i: i["id"])
    for key, ascending in reversed(query.sort):  # stable sorts, least significant key first
        found.sort(key=lambda i: _sort_value(i.get(key)), reverse=not ascending)
    links: list[tuple[str, str, bool]] = []
    if query.limit:
        found, links = _paginate(query, found)
    elif query.marker is not None:
        found, _ = _paginate(query, found)
    if query.fields:
        found = [{k: i[k] for k in query.fields if k in i} for i in found]
    return Page(found, links)


def _marker_index(query: Query, items: list[dict[str, Any]]) -> tuple[int, bool]:
    """(index, exact): where the marker is, or where it would be when sorted by id alone."""
    for pos, item in enumerate(items):
        if item["id"] == query.marker:
            return pos, True
    if query.sort:
        raise bad_request("marker", f"'{query.marker}' is not among the listed objects")
    return bisect.bisect_left([i["id"] for i in items], query.marker), False


def _paginate(query: Query, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list]:
    limit = query.limit or len(items)
    links = []
    if not query.page_reverse:
        if query.marker is None:
            start = 0
        else:
            pos, exact = _marker_index(query, items)
            start = pos + 1 if exact else pos
        page = items[start:start + limit]
        if page and start + limit < len(items):
            links.append(("next", page[-1]["id"], False))
        if page and query.marker is not None:
            links.append(("previous", page[0]["id"], True))
    else:
        end = len(items) if query.marker is None else _marker_index(query, items)[0]
        begin = max(0, end - limit)
        page = items[begin:end]
        if page and query.marker is not None:
            links.append(("next", page[-1]["id"], False))
        if page and begin > 0:
            links.append(("previous", page[0]["id"], True))
    return page, links
