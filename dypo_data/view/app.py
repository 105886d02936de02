"""The viewer's ASGI app (Starlette): routes, templates, static assets and error pages.

Every route is a GET that renders one page from `pages.py`. Templates autoescape everything, so a
completion is always text; the Content-Security-Policy allows only the app's own scripts (no
inline script, no event-handler attributes) as a second line of defence. A refused request gets
an error page with its 4xx status; an unexpected failure gets a 500 page that names no internals
(the traceback goes to the server's log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dypo_data.errors import DypoError
from dypo_data.view import pages
from dypo_data.view.params import PageError, Query
from dypo_data.view.snapshot import Snapshot

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
NAV = (("overview", "/", "Overview"), ("groups", "/groups", "Groups"), ("runs", "/runs", "Runs"), ("eval", "/eval", "Eval"))
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _number
    return env


def _number(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "NaN"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def create_app(store: Path, *, snapshot: Snapshot | None = None) -> Starlette:
    """The viewer over `store` (a directory that exists; see `snapshot.Snapshot` for how it is read)."""
    snap = snapshot or Snapshot(store)
    env = template_environment()

    def render(request: Request, template: str, context: dict, status: int = 200, active: str = "") -> HTMLResponse:
        body = env.get_template(template).render(
            store=str(store), nav=NAV, active=active, path=request.url.path, **context)
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def page_route(active: str, build: Callable[..., pages.Page]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            query = Query(list(request.query_params.multi_items()))
            page = build(snap, query, **request.path_params)
            return render(request, page.template, {**page.context, "queries": page.queries}, active=active)
        return endpoint

    def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, PageError):
            status, message = exc.status, exc.message
        elif isinstance(exc, HTTPException):
            status = exc.status_code
            message = f"no page at {request.url.path}" if status == 404 else str(exc.detail)
        elif isinstance(exc, DypoError):
            status, message = 503, str(exc)
        else:
            log.exception("error rendering %s", request.url.path, exc_info=exc)
            status, message = 500, "the page failed to render; the server's log has the details"
        return render(request, "error.html", {"status": status, "message": message, "queries": []}, status=status)

    routes = [
        Route("/", page_route("overview", pages.overview)),
        Route("/groups", page_route("groups", pages.groups)),
        Route("/prompt/{prompt_id}", page_route("groups", pages.prompt)),
        Route("/runs", page_route("runs", pages.runs)),
        Route("/runs/{run_id}/skipped", page_route("runs", pages.skipped)),
        Route("/eval", page_route("eval", pages.evaluation)),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers = {PageError: refused, HTTPException: refused, DypoError: refused, Exception: refused}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.snapshot = snap
    return app
