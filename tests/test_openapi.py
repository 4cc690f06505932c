"""The OpenAPI document tells the truth about errors, and /docs works with no network but ours."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from litestar.testing import TestClient

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}
# Operations that never touch the database: everything else must document 503.
NO_DATABASE = {("get", "/health"), ("get", "/metrics")}


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append((tag, value))


def test_docs_page_loads_everything_from_the_service_itself(client: TestClient[Any]) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(page.text)
    urls = dict((url, tag) for tag, url in parser.urls)
    assert len(urls) >= 4, urls  # stylesheet, Swagger UI, its standalone preset, favicon

    expected_types = {
        ".js": ("text/javascript", "application/javascript"),
        ".css": ("text/css",),
        ".png": ("image/png",),
    }
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), f"{url} is not on this origin"
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].split(";")[0] in expected_types[suffix], (url, asset.headers)
        assert len(asset.content) > 500, url
    assert "SwaggerUIBundle(" in page.text and "swagger-ui-bundle.js" in page.text


def test_every_error_in_the_document_is_problem_json(client: TestClient[Any]) -> None:
    doc = client.get("/openapi.json").json()
    problem = doc["components"]["schemas"]["ProblemDetails"]
    assert set(problem["required"]) == {"title", "status", "detail"}
    assert {"title", "status", "detail", "type", "errors"} <= set(problem["properties"])

    operations = [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(operations) >= 14
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        statuses = set(op["responses"])
        assert any(s.startswith("2") for s in statuses), where
        for status, response in op["responses"].items():
            if status.startswith("2"):
                assert "application/problem+json" not in response.get("content", {}), where
                continue
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], f"{where} {status} is not problem+json"
            assert content["application/problem+json"]["schema"] == PROBLEM_SCHEMA, f"{where} {status}"
            if status in {"429", "503"}:
                assert response["headers"]["Retry-After"]["required"] is True, f"{where} {status}"
        if (method, path) not in NO_DATABASE:
            assert "503" in statuses, f"{where} touches the database but does not list 503"
        if op.get("parameters"):
            assert "400" in statuses, f"{where} takes parameters but does not list 400"


def test_document_lists_what_each_route_really_answers(client: TestClient[Any]) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    def statuses(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # 202: bus mode's answer (BUS_URL), in the stream and committed later by a writer
    assert statuses("post", "/v1/ingest") == {"201", "202", "400", "401", "403", "413", "415", "429", "503"}
    link = {"200", "201", "400", "401", "403", "409", "413", "429", "503"}
    assert statuses("put", "/v1/vehicles/{vehicleId}/meter") == link
    assert statuses("get", "/v1/vehicles/{vehicleId}/meter") == {"200", "400", "401", "403", "404", "503"}
    assert statuses("delete", "/v1/vehicles/{vehicleId}/meter") == {"200", "400", "401", "403", "404", "503"}
    assert statuses("get", "/v1/analytics/performance/{vehicleId}") == {"200", "400", "401", "403", "404", "503"}
    assert statuses("get", "/v1/analytics/fleet") == {"200", "400", "401", "403", "503"}
    assert statuses("get", "/ready") == {"200", "503"}
    assert statuses("get", "/health") == {"200", "503"}  # 503: the embedded server could not be restarted
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}

    body = paths["/v1/ingest"]["post"]["requestBody"]["content"]
    stream = body["application/x-ndjson"]["schema"]
    assert stream["type"] == "array" and stream["maxItems"] == 10_000  # a stream of readings, not one
    kinds = stream["items"]["anyOf"]
    assert [sorted(k["required"]) for k in kinds] == [
        ["meterId", "timestamp", "voltage"],
        ["batteryTemp", "soc", "timestamp", "vehicleId"],
    ]
    # ...and exactly one of each kind's energy pair: the interval's energy or the cumulative register.
    assert [k["oneOf"] for k in kinds] == [
        [{"required": ["kwhConsumedAc"]}, {"required": ["kwhConsumedAcTotal"]}],
        [{"required": ["kwhDeliveredDc"]}, {"required": ["kwhDeliveredDcTotal"]}],
    ]


def test_errors_answered_match_the_document(client: TestClient[Any]) -> None:
    """A few real error answers, read as a client would: the documented status, type and fields."""
    answers = [
        (client.get("/v1/vehicles/bad%20id/live"), 400),
        (client.get("/v1/vehicles/live?limit=0"), 400),
        (client.get("/v1/analytics/fleet?limit=abc"), 400),
        (client.get("/v1/meters/MTR-NONE/live"), 404),
        (client.put("/v1/vehicles/EV-1/meter", content=b"{", headers={"content-type": "application/json"}), 400),
        (client.post("/v1/ingest", content=b"x", headers={"content-type": "text/csv"}), 415),
    ]
    for response, status in answers:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert {"title", "status", "detail"} <= set(body) <= {"title", "status", "detail", "type", "errors"}
        assert body["status"] == status
