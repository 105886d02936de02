"""Hostile requests get a 4xx page, never a traceback, and nothing a request does writes to the store."""

from __future__ import annotations

import pytest
from view_store_factory import store_digest

HOSTILE = [
    ("/groups?tier=hard%27%20OR%201%3D1--", 400),
    ("/groups?model=x%27%3B%20DROP%20TABLE%20prompts%3B--", 400),
    ("/groups?source=%3Cscript%3Ealert(1)%3C/script%3E", 400),
    ("/groups?status=ok&status=timeout", 400),
    ("/groups?page=0", 400),
    ("/groups?page=-1", 400),
    ("/groups?page=1e9", 400),
    ("/groups?page=99999999999999999999999", 400),
    ("/groups?page=5000", 404),
    ("/groups?per_page=100000", 400),
    ("/groups?hard_without_teacher=maybe", 400),
    ("/groups?q=" + "x" * 500, 400),
    ("/groups?q=a%00b", 400),
    ("/groups?order=prompt_id%3B%20DELETE", 400),
    ("/?select=1", 400),
    ("/prompt/0123456789abcdef", 404),
    ("/prompt/%27%20OR%20%271%27%3D%271", 404),
    ("/prompt/..%2F..%2Fetc%2Fpasswd", 404),
    ("/prompt/0123456789abcdef?x=1", 400),
    ("/runs?run=nope", 400),
    ("/runs?run=dypo-a%27--", 400),
    ("/runs/nope/skipped", 404),
    ("/runs/dypo-a/skipped?step=-3", 400),
    ("/runs/dypo-a/skipped?step=999999", 400),
    ("/runs/dypo-a/skipped?reason=DROP", 400),
    ("/eval?model=%27%3B--", 400),
    ("/static/../../../etc/passwd", 404),
    ("/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", 404),
    ("/static/..%2f..%2fapp.py", 404),
    ("/static/katex/../../app.py", 404),
    ("/no/such/page", 404),
]


@pytest.mark.parametrize("url, status", HOSTILE, ids=[u for u, _ in HOSTILE])
def test_hostile_request_gets_an_error_page(client, url, status):
    page = client.get(url)
    assert page.status_code == status
    assert '<p class="error-message">' in page.text
    assert "Traceback" not in page.text and "duckdb" not in page.text.lower()
    assert "<script>alert" not in page.text


def test_other_methods_are_refused(client):
    assert client.post("/groups", data={"tier": "hard"}).status_code == 405
    assert client.delete("/prompt/0123456789abcdef").status_code == 405


def test_no_request_writes_to_the_store(view_store, client):
    before = store_digest(view_store.root)
    for url, _ in HOSTILE:
        client.get(url)
    for url in ("/", "/groups", "/runs", "/eval", f"/prompt/{view_store.prompts[0]['prompt_id']}", "/runs/dypo-a/skipped"):
        assert client.get(url).status_code == 200
    assert store_digest(view_store.root) == before


def test_an_unexpected_failure_is_a_500_page_without_internals(view_store, monkeypatch):
    from starlette.testclient import TestClient

    from dypo_data.view import pages
    from dypo_data.view.app import create_app

    def broken(snap, query):
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(pages, "evaluation", broken)
    client = TestClient(create_app(view_store.root), raise_server_exceptions=False)
    page = client.get("/eval")
    assert page.status_code == 500 and "secret internals" not in page.text and "Traceback" not in page.text
