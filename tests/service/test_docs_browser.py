"""`/docs` (Swagger UI) and `/redoc` render in a real browser with no request leaving the
machine: headless Chromium against a live gateway, every operation of the OpenAPI schema on
the page, and a screenshot for the README."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser import Chromium, Page, chromium, chromium_path
from tests.servers import GatewayProcess, gateway
from tests.tiny_models import forecaster, full_store

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "docs_swagger_ui.png"
"""Rewritten when UPDATE_DOCS_IMAGES=1; otherwise the test's copy goes to its tmp_path."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("docs")
    store = full_store(root / "store")
    forecaster(store)
    with gateway(store, root) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: deploy/install-system.sh installs it")
        pytest.skip("needs chromium (deploy/install-system.sh installs it)")
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as running:
        yield running


def operations(server: GatewayProcess) -> set[tuple[str, str]]:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    return {
        (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method in methods
        if method in ("get", "post", "put", "delete", "patch")
    }


def foreign(page: Page, server: GatewayProcess) -> list[str]:
    """Requests that went to anything but the gateway (data: and blob: URLs stay in the page;
    a request the page's Content-Security-Policy blocked was never sent)."""
    assert set(page.blocked.values()) <= {"csp"}, page.blocked
    return [
        url
        for url in page.requests
        if urlsplit(url).scheme not in ("data", "blob", "about")
        and urlsplit(url).netloc != f"127.0.0.1:{server.port}"
        and url not in page.blocked
    ]


def test_swagger_ui_renders_every_operation_offline(
    live: GatewayProcess, browser: Chromium, tmp_path: Path
) -> None:
    expected = operations(live)
    assert len(expected) >= 15
    page = browser.new_page()
    page.open(f"{live.url}/docs")
    page.wait_for(f"document.querySelectorAll('.opblock').length >= {len(expected)}")
    rendered = page.evaluate(
        """Array.from(document.querySelectorAll('.opblock')).map(block => [
            block.querySelector('.opblock-summary-method').textContent.trim(),
            block.querySelector('.opblock-summary-path').getAttribute('data-path'),
        ])"""
    )
    assert {(method, path) for method, path in rendered} == expected
    title = page.evaluate("document.querySelector('.info .title').textContent")
    assert title.startswith("Model-serving gateway")
    assert not foreign(page, live), foreign(page, live)
    assert f"{live.url}/docs-assets/swagger-ui-bundle.js" in page.requests
    assert f"{live.url}/openapi.json" in page.requests
    assert not page.failed, page.failed
    assert not page.console_errors, page.console_errors
    # Open one operation: its parameters and responses render too.
    page.evaluate(
        "document.querySelector('[id^=\"operations-KServe_V1\"] .opblock-summary-control').click()"
    )
    page.wait_for("document.querySelector('.opblock.is-open .responses-wrapper')")
    target = SCREENSHOT if os.environ.get("UPDATE_DOCS_IMAGES") == "1" else tmp_path / "docs.png"
    shot = page.screenshot(target)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


def test_redoc_renders_every_operation_offline(live: GatewayProcess, browser: Chromium) -> None:
    expected = operations(live)
    page = browser.new_page()
    page.open(f"{live.url}/redoc")
    page.wait_for(f"document.querySelectorAll('[data-section-id]').length > {len(expected)}")
    sections = page.evaluate(
        """Array.from(document.querySelectorAll('[data-section-id^="operation/"]'))
            .map(element => element.getAttribute('data-section-id'))"""
    )
    schema = httpx.get(f"{live.url}/openapi.json", timeout=10).json()
    operation_ids = {
        operation["operationId"]
        for methods in schema["paths"].values()
        for operation in methods.values()
    }
    assert {section.removeprefix("operation/") for section in sections} == operation_ids
    assert len(sections) == len(expected)
    assert not foreign(page, live), foreign(page, live)
    assert f"{live.url}/docs-assets/redoc.standalone.js" in page.requests
    assert not page.failed, page.failed


def test_docs_pages_reference_only_local_assets(live: GatewayProcess) -> None:
    for path in ("/docs", "/redoc"):
        html = httpx.get(live.url + path, timeout=10).text
        assert "http://" not in html and "https://" not in html, html
    assert httpx.get(f"{live.url}/docs-assets/swagger-ui.css", timeout=10).status_code == 200
    redirect = httpx.get(f"{live.url}/docs/oauth2-redirect", timeout=10)
    assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()
