"""The web console's pages: one HTML shell at ``/`` and its assets under ``/static``.

The shell carries no data and no secret. Its JavaScript asks ``/console/session`` which view
to show (login, tenant or admin) and then calls the JSON API with the session cookie
(api/console.py). Every page and asset is sent with a strict Content-Security-Policy: only
this server's own scripts, styles and images, no inline code, no framing.
"""

from __future__ import annotations

import mimetypes
import os
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from embedgate import __version__

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=CONSOLE_DIR / "templates")


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def console(request: Request) -> Response:
    response = templates().TemplateResponse(request, "index.html", {"version": __version__})
    # The shell is tiny and names the asset version: always fetch it fresh.
    response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-store"})
    return response


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for it on any page, JSON ones included; the console's icon answers."""
    return FileResponse(
        CONSOLE_DIR / "static" / "favicon.svg",
        media_type="image/svg+xml",
        headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"},
    )


class ConsoleStatic(StaticFiles):
    """Package assets. ``no-cache`` lets browsers keep them but revalidate each load (a 304
    with the ETag), so an upgraded server never runs with last version's scripts."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-cache"})
        return response


def install(app: FastAPI) -> None:
    """Serve the console from ``app``: ``/`` and ``/static``."""
    # Browsers run ES modules only with a JavaScript type; some hosts' MIME tables lack it.
    mimetypes.add_type("text/javascript", ".js")
    app.include_router(router)
    app.mount("/static", ConsoleStatic(directory=CONSOLE_DIR / "static"), name="static")
