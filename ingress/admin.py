"""What only operators may read: /metrics, the OpenAPI document and its /docs page.

On a listener bound to a loopback address they are open, as before. On any other address the API port
serves them only with `Authorization: Bearer <guard.admin_token>`; `guard.admin_port`, a second
listener on the same host, serves them (and the health endpoints) to whoever reaches it, and nothing
else. Anyone else gets the same 404 as for a path that does not exist.

/docs loads Swagger UI's scripts and styles from the package (swagger-ui-bundle), not from a CDN.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from ingress import problems
from shared.settings import Settings

ADMIN_PATHS = ("/metrics", "/openapi.json", "/docs")
HEALTH_PATHS = ("/healthz", "/readyz")
ASSETS = "/docs/assets"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_docs(app: FastAPI) -> None:
    """/docs from the package's own copy of Swagger UI (the app is made with docs_url=None)."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False)


class AdminGate:
    """Decides, per request, whether an operator path may be served (see the module's note)."""

    def __init__(self, settings: Settings) -> None:
        self._open = is_loopback(settings.ingress.host)
        self._admin_port = settings.guard.admin_port or None
        token = settings.guard.admin_token
        self._expected = f"Bearer {token}".encode() if token else None

    def refusal(self, scope: dict[str, Any]) -> bytes | None:
        """None when the request may go on; else the body of the 404 to answer with."""
        path: str = scope["path"]
        admin = path.startswith(ADMIN_PATHS)
        server = scope.get("server")
        if self._admin_port is not None and server is not None and server[1] == self._admin_port:
            return None if admin or path in HEALTH_PATHS else _not_found(path)
        if not admin or self._open:
            return None
        if self._expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if hmac.compare_digest(given, self._expected):
                return None
        return _not_found(path)


def _not_found(path: str) -> bytes:
    return orjson.dumps(
        problems.problem_body(
            status=404, kind="not-found", title="Not found", detail=f"no {path[:64]!r} here"
        )
    )
