"""Fixtures of the viewer's tests: one store with every kind of row the pages show, and an app over it.

`view_store` is built once per session and must stay unchanged: `test_view_hostile` checks that no
request writes to it. Tests that add shards build a store of their own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parents[1])
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


@pytest.fixture(scope="session")
def view_store(tmp_path_factory):
    from view_store_factory import build_view_store

    return build_view_store(tmp_path_factory.mktemp("view") / "store")


@pytest.fixture(scope="session")
def view_app(view_store):
    from dypo_data.view.app import create_app

    return create_app(view_store.root)


@pytest.fixture
def client(view_app):
    from starlette.testclient import TestClient

    with TestClient(view_app) as c:
        yield c
