"""The API's OpenAPI 3.1 document, built from the resource tables in `dfflow.api.attributes`.

Request bodies are read by the handlers themselves (to answer malformed input the way Neutron does),
so the schemas are declared here rather than inferred from handler signatures.
"""
from __future__ import annotations

from typing import Any

from dfflow.api.attributes import BINDING, ID_PATTERN, INTERFACE_IN, INTERFACE_OUT, RESOURCES, Resource

ERROR = {"$ref": "#/components/schemas/NeutronError"}
ERROR_SCHEMA = {
    "type": "object", "required": ["NeutronError"],
    "properties": {"NeutronError": {
        "type": "object", "required": ["type", "message", "detail"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}, "detail": {"type": "string"}}}},
}
LINKS = {"type": "array", "items": {"type": "object", "required": ["rel", "href"],
                                    "properties": {"rel": {"type": "string"}, "href": {"type": "string"}}}}
_ERROR_TEXT = {400: "Bad request: names the field at fault", 401: "Missing or wrong X-Auth-Token",
               404: "No such object or resource", 409: "Conflicts with existing state",
               412: "If-Match revision_number does not match", 413: "Request body too large",
               415: "Request body is not JSON", 503: "The NB database is unreachable"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: int, ok_schema: dict[str, Any] | None, errors: tuple[int, ...], auth: bool
               ) -> dict[str, Any]:
    found: dict[str, Any] = {str(ok): _json(ok_schema, "Success") if ok_schema else {"description": "Success"}}
    for code in sorted(set(errors) | {400, 404, 503} | ({401} if auth else set())):
        found[str(code)] = _json(ERROR, _ERROR_TEXT[code])
    return found


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN, "maxLength": 255}}


def _query_schema(schema: dict[str, Any]) -> dict[str, Any]:
    kinds = schema.get("type", "string")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "boolean" in kinds:
        return {"type": "boolean"}
    if "integer" in kinds:
        return {"type": "integer"}
    return {"type": "string", "maxLength": 255}


def _list_params(resource: Resource) -> list[dict[str, Any]]:
    sortable = [a.name for a in resource.attrs
                if not {"array", "object"} & set([a.out_schema.get("type")] if isinstance(
                    a.out_schema.get("type"), str) else a.out_schema.get("type", []))]
    params = [
        {"name": "fields", "in": "query", "style": "form", "explode": True,
         "schema": {"type": "array", "items": {"type": "string"}}},  # unknown names are ignored
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "marker", "in": "query", "schema": {"type": "string", "maxLength": 255}},
        {"name": "page_reverse", "in": "query", "schema": {"type": "boolean"}},
        {"name": "sort_key", "in": "query", "style": "form", "explode": True,
         "schema": {"type": "array", "items": {"type": "string", "enum": sortable}}},
        {"name": "sort_dir", "in": "query", "style": "form", "explode": True,
         "schema": {"type": "array", "items": {"type": "string", "enum": ["asc", "desc"]}}},
    ]
    for name, schema in resource.filters().items():
        params.append({"name": name, "in": "query", "schema": _query_schema(schema)})
    return params


def build(auth: bool, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/": {"get": {"operationId": "listVersions", "summary": "API versions (version discovery)",
                      "responses": _responses(200, {"type": "object", "required": ["versions"],
                                                    "properties": {"versions": {"type": "array"}}}, (), False)}},
        "/v2.0": {"get": {"operationId": "listResources", "summary": "The resources of API v2.0",
                          "responses": _responses(200, {"type": "object", "required": ["resources"],
                                                        "properties": {"resources": {"type": "array"}}}, (),
                                                  False)}},
        "/v2.0/extensions": {"get": {"operationId": "listExtensions", "summary": "Supported extensions",
                                     "responses": _responses(200, {"type": "object", "required": ["extensions"],
                                                                   "properties": {"extensions": {"type": "array"}}},
                                                             (), auth)}},
    }
    for plural, resource in RESOURCES.items():
        one, many = resource.singular, resource.plural
        item = {"type": "object", "required": [one], "properties": {one: resource.item_schema()}}
        listing = {"type": "object", "required": [many],
                   "properties": {many: {"type": "array", "items": resource.item_schema()},
                                  f"{many}_links": LINKS}}
        key = f"{one}_id"
        paths[f"/v2.0/{many}"] = {
            "get": {"operationId": f"list_{many}", "summary": f"List {many} (filters, fields, sorting, paging)",
                    "parameters": _list_params(resource), "responses": _responses(200, listing, (), auth)},
            "post": {"operationId": f"create_{one}", "summary": f"Create a {one}",
                     "requestBody": _body(resource.request_schema("POST")),
                     "responses": _responses(201, item, (409, 413, 415), auth)},
        }
        paths[f"/v2.0/{many}/{{{key}}}"] = {
            "parameters": [_path_param(key)],
            "get": {"operationId": f"show_{one}", "summary": f"Show a {one}",
                    "parameters": [_list_params(resource)[0]], "responses": _responses(200, item, (), auth)},
            "put": {"operationId": f"update_{one}", "summary": f"Update a {one}",
                    "parameters": [{"name": "If-Match", "in": "header", "required": False,
                                    "schema": {"type": "string", "pattern": r"^revision_number=[0-9]{1,18}$"}}],
                    "requestBody": _body(resource.request_schema("PUT")),
                    "responses": _responses(200, item, (409, 412, 413, 415), auth)},
            "delete": {"operationId": f"delete_{one}", "summary": f"Delete a {one}",
                       "responses": _responses(204, None, (409,), auth)},
        }
    for action in ("add_router_interface", "remove_router_interface"):
        paths[f"/v2.0/routers/{{router_id}}/{action}"] = {
            "parameters": [_path_param("router_id")],
            "put": {"operationId": action, "summary": action.replace("_", " ").capitalize(),
                    "requestBody": _body(INTERFACE_IN),
                    "responses": _responses(200, INTERFACE_OUT, (409, 413, 415), auth)},
        }
    paths.update(_binding_paths(auth))
    paths["/dfflow/status"] = {"get": {
        "operationId": "dfflowStatus", "summary": "dfflow's own status: the Nova notifier's counters (null when off)",
        "responses": _responses(200, {"type": "object", "required": ["nova_notifier"],
                                      "properties": {"nova_notifier": {"type": ["object", "null"]}}}, (), auth)}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Neutron v2.0 networking API over dfflow's NB database."},
        "paths": paths,
        "components": {"schemas": {"NeutronError": ERROR_SCHEMA}},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"token": {"type": "apiKey", "in": "header",
                                                          "name": "X-Auth-Token"}}
        doc["security"] = [{"token": []}]
        for path in ("/", "/v2.0"):
            doc["paths"][path]["get"]["security"] = []
    return doc


def _binding_paths(auth: bool) -> dict[str, Any]:
    """The binding-extended extension: a port's bindings, keyed by host."""
    item = {"type": "object", "required": ["binding"], "properties": {"binding": BINDING.item_schema()}}
    listing = {"type": "object", "required": ["bindings"],
               "properties": {"bindings": {"type": "array", "items": BINDING.item_schema()}}}
    collection = "/v2.0/ports/{port_id}/bindings"
    member = collection + "/{host}"
    return {
        collection: {
            "parameters": [_path_param("port_id")],
            "get": {"operationId": "list_port_bindings", "summary": "List a port's bindings (ACTIVE and INACTIVE)",
                    "parameters": [p for p in _list_params(BINDING) if p["name"] not in ("limit", "marker",
                                                                                          "page_reverse")],
                    "responses": _responses(200, listing, (), auth)},
            "post": {"operationId": "create_port_binding",
                     "summary": "Bind a compute port to another host: an INACTIVE binding (live migration)",
                     "requestBody": _body(BINDING.request_schema("POST")),
                     "responses": _responses(201, item, (409, 413, 415), auth)},
        },
        member: {
            "parameters": [_path_param("port_id"), _path_param("host")],
            "get": {"operationId": "show_port_binding", "summary": "Show a port's binding for a host",
                    "parameters": [_list_params(BINDING)[0]], "responses": _responses(200, item, (), auth)},
            "delete": {"operationId": "delete_port_binding",
                       "summary": "Delete a port's binding for a host (the active one unbinds the port)",
                       "responses": _responses(204, None, (), auth)},
        },
        member + "/activate": {
            "parameters": [_path_param("port_id"), _path_param("host")],
            "put": {"operationId": "activate_port_binding",
                    "summary": "Make the host's INACTIVE binding the ACTIVE one (no request body)",
                    "responses": _responses(200, item, (409,), auth)},
        },
    }
