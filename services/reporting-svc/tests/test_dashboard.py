"""The dashboard is static HTML/CSS/JS served by the service itself (no database needed)."""

import re

from fastapi.testclient import TestClient
from reporting_svc.main import app


def test_dashboard_page_and_assets_are_served() -> None:
    client = TestClient(app)  # no `with`: the lifespan (database, Kafka) does not start
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.content, asset
    script = client.get("/static/app.js")
    assert "javascript" in script.headers["content-type"]
    # The script calls this service's own API, and nothing from elsewhere.
    for path in ("/summary", "/runs", "/accounts", "/lots"):
        assert path in script.text
    assert not re.search(r"https?://", page.text + script.text)
    # Every call carries the signed-in caller's token; a 401 brings the sign-in form back.
    assert 'headers.Authorization = "Bearer " + token()' in script.text
    assert "response.status === 401" in script.text and 'id="sign-out"' in page.text


def test_missing_static_file_is_404() -> None:
    client = TestClient(app)
    assert client.get("/static/nope.js").status_code == 404
