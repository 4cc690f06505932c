"""Nobody comes in without a key: every route the app has, taken from the app itself, refuses a missing,
unknown, forged or revoked key (401, all alike) and a key without the route's scope (403). A route added
later is in this list by construction, so it cannot be left open by mistake.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.routes import ASGIRoute, HTTPRoute
from litestar.testing import TestClient

from energy_ingest.http.auth import is_public
from energy_ingest.http.front import FrontDoor
from energy_ingest.keys.service import SCOPES
from tests.keys.conftest import admin, bearer, new_key, prefix_of

# A valid value for every path parameter any route has; a route with a new parameter fails here until
# it gets one, rather than being skipped.
SAMPLES = {
    "meterId": "MTR-1001",
    "vehicleId": "EV-2001",
    "prefix": "ei_00000000",
    "path": "no-such-page",
    "chargerId": "CP-1",
    "idTag": "TAG-1",
    "sessionId": 1,
    "alertId": 1,
    "webhookId": 1,
}
UNKNOWN_KEY = "ei_0badc0de_" + "A" * 43
KEY_FOR_HEADERS: dict[str, str] = {}  # one key for all the malformed-header cases


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    scope: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.scope})"


def endpoints(app: Litestar) -> list[Endpoint]:
    """Every method of every route that is not public, with the scope its handler asks for."""
    found = []
    for route in app.routes:
        if is_public(route.path_format):
            continue
        missing = set(route.path_parameters) - set(SAMPLES)
        assert not missing, f"{route.path}: add a sample value for {missing} to SAMPLES"
        path = route.path_format.format(**{name: SAMPLES[name] for name in route.path_parameters})
        if isinstance(route, ASGIRoute):
            # A bare ASGI handler sees every method; the guard must stand before each.
            scope = str(route.route_handler.opt.get("scope", "admin"))
            found += [Endpoint(method, path, scope) for method in ("POST", "GET", "PUT", "DELETE")]
        else:
            assert isinstance(route, HTTPRoute)
            for handler in route.route_handlers:
                scope = str(handler.opt.get("scope", "admin"))
                found += [Endpoint(m, path, scope) for m in sorted(handler.http_methods) if m != "OPTIONS"]
    return found


def test_the_route_list_covers_the_api(front: FrontDoor) -> None:
    listed = {(e.method, e.path, e.scope) for e in endpoints(front.app)}
    # A sample of what must be there, so a broken walk of the routes cannot pass vacuously.
    assert {
        ("POST", "/v1/ingest", "ingest"),
        ("GET", "/v1/meters/live", "read"),
        ("PUT", "/v1/vehicles/EV-2001/meter", "admin"),
        ("POST", "/v1/keys", "admin"),
        ("DELETE", "/v1/keys/ei_00000000", "admin"),
        ("GET", "/metrics", "read"),
        ("POST", "/v1/chargers", "admin"),
        ("GET", "/v1/sessions/1", "read"),
        ("PUT", "/v1/id-tags/TAG-1", "admin"),
    } <= listed
    assert not any(path in {"/health", "/ready", "/openapi.json", "/docs"} for _, path, _ in listed)


def test_every_route_refuses_missing_unknown_forged_revoked_and_wrong_scope_keys(
    front: FrontDoor, service: TestClient[Any]
) -> None:
    keys = {scope: new_key(service, f"guard {scope}", [scope]) for scope in SCOPES}
    revoked = new_key(service, "guard revoked", ["admin"])
    assert service.delete(f"/v1/keys/{prefix_of(revoked)}", headers=admin()).status_code == 200
    forged = prefix_of(keys["admin"]) + "_" + "B" * 43  # a real prefix with a made-up secret
    refused: dict[str, dict[str, str]] = {
        "no key": {},
        "unknown key": bearer(UNKNOWN_KEY),
        "forged key": bearer(forged),
        "revoked key": bearer(revoked),
    }
    wrong: list[str] = []
    first_401: bytes | None = None
    for endpoint in endpoints(front.app):
        for what, headers in refused.items():
            answer = service.request(endpoint.method, endpoint.path, headers=headers)
            first_401 = first_401 or answer.content
            if (
                answer.status_code != 401
                or answer.headers.get("content-type") != "application/problem+json"
                or not answer.headers.get("www-authenticate", "").startswith("Bearer ")
                or answer.content != first_401  # nothing tells which part was wrong
            ):
                wrong.append(f"{endpoint} with {what}: {answer.status_code} {answer.headers} {answer.text}")
        for scope, key in keys.items():
            if scope == endpoint.scope or scope == "admin":
                continue
            answer = service.request(endpoint.method, endpoint.path, headers=bearer(key))
            if answer.status_code != 403 or answer.headers.get("content-type") != "application/problem+json":
                wrong.append(f"{endpoint} with a {scope} key: {answer.status_code} {answer.text}")
        # The right key gets past the guard (the sample request may still be invalid or find nothing).
        for key in {keys[endpoint.scope], keys["admin"]}:
            answer = service.request(endpoint.method, endpoint.path, headers=bearer(key))
            if answer.status_code in {401, 403, 500}:
                wrong.append(f"{endpoint} with its own scope: {answer.status_code} {answer.text}")
    assert not wrong, "\n".join(wrong)
    assert first_401 is not None
    assert b"ei_" not in first_401


def test_public_routes_need_no_key(service: TestClient[Any]) -> None:
    for path in ("/health", "/ready", "/openapi.json", "/docs"):
        assert service.get(path).status_code == 200, path


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"Basic " + base64.b64encode(b"admin:admin"), id="basic scheme"),
        pytest.param(b"Token {key}", id="other scheme, good key"),
        pytest.param(b"{key}", id="no scheme"),
        pytest.param(b"Bearer{key}", id="no space"),
        pytest.param(b"Bearer\t{key}", id="tab, not a space"),
        pytest.param(b"Bearer {key}" + b"x" * 300, id="token over 256 bytes"),
        pytest.param(b"Bearer " + b"a" * 20_000, id="20 kB token"),
        pytest.param(b"Bearer {key}\xc3\xa9", id="non-ASCII after a good key"),
        pytest.param(b"Bearer \xff\xfe\x80", id="non-ASCII bytes"),
        pytest.param(b"Bearer", id="scheme only"),
        pytest.param(b"Bearer ", id="empty token"),
        pytest.param(b"Bearer      ", id="only spaces"),
        pytest.param(b"Bearer {key} {key}", id="two tokens"),
        pytest.param(b"Bearer ei_ 12345678 abc", id="spaces inside the token"),
        pytest.param(b"Bearer {key}\x00", id="NUL byte"),
    ],
)
def test_malformed_authorization_is_401_never_500(service: TestClient[Any], header: bytes) -> None:
    key = KEY_FOR_HEADERS.setdefault("admin", new_key(service, "header tests", ["admin"]))
    value = header.replace(b"{key}", key.encode())
    answer = service.get("/v1/meters/live", headers={b"Authorization": value})
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer ")


def test_well_formed_variants_of_the_header_are_accepted(service: TestClient[Any]) -> None:
    key = new_key(service, "header variants", ["read"])
    # The scheme is case-insensitive, and RFC 6750 allows one or more spaces before the token.
    for value in (f"Bearer {key}", f"bearer {key}", f"BEARER {key}", f"Bearer    {key}", f"Bearer {key}  "):
        assert service.get("/v1/meters/live", headers={"Authorization": value}).status_code == 200, repr(value)


def test_a_host_not_allowed_is_refused_before_anything_else(service: TestClient[Any]) -> None:
    for host in ("evil.example", "evil.example:8000", "127.0.0.2", "", "testserver.local.evil.example"):
        answer = service.get("/v1/meters/live", headers={"Host": host, **admin()})
        assert answer.status_code == 400, (host, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["title"] == "Host not allowed" and "ALLOWED_HOSTS" in problem["detail"]
        # Before the key check: a request without a key learns only that the host is wrong.
        assert service.get("/v1/meters/live", headers={"Host": host}).status_code == 400
    for host in ("testserver.local", "TestServer.Local", "localhost:8000", "127.0.0.1", "127.0.0.1:1234"):
        assert service.get("/v1/meters/live", headers={"Host": host, **admin()}).status_code == 200, host


def test_openapi_declares_the_bearer_scheme_and_operations_require_it(service: TestClient[Any]) -> None:
    doc = service.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    default = doc.get("security")
    wrong = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            needs = op.get("security", default)
            if is_public(path):
                if needs not in (None, []):
                    wrong.append(f"{method} {path} is public but documented as needing {needs}")
                continue
            if {"bearer": []} not in (needs or []):
                wrong.append(f"{method} {path} does not require the bearer key")
            if "401" not in op["responses"]:
                wrong.append(f"{method} {path} does not document 401")
            if "403" not in op["responses"]:
                wrong.append(f"{method} {path} does not document 403")
    assert not wrong, "\n".join(wrong)
