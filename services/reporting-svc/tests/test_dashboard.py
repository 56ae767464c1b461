"""The dashboard is static HTML/CSS/JS served by the service itself (no database needed)."""

import re
import shutil
import subprocess

import pytest
from ballast_common.auth import PERMISSIONS, Permission, Role
from fastapi.testclient import TestClient
from reporting_svc.api import STATIC_DIR
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


def test_the_review_page_calls_the_approval_routes_and_knows_who_decides() -> None:
    client = TestClient(app)
    page, script = client.get("/").text, client.get("/static/app.js").text
    assert 'data-nav="review"' in page and 'id="held-count"' in page
    for path in ("/approvals/counts", "/approvals/proposals", "/approvals/proposals/approve"):
        assert path in script
    for action in ("${action}", "edit", "history"):
        assert f"/approvals/proposals/${{id}}/{action}" in script
    assert 'decideProposal("approve")' in script and 'decideProposal("reject")' in script
    # The buttons show for the roles the permission matrix lets decide (the service checks).
    listed = re.search(r"const DECIDER_ROLES = \[([^\]]*)\]", script)
    assert listed is not None
    deciders = {r.value for r in Role if Permission.DECIDE_PROPOSALS in PERMISSIONS[r]}
    assert set(re.findall(r'"([^"]+)"', listed.group(1))) == deciders


def test_the_exceptions_page_calls_taxlots_routes_and_knows_who_resolves() -> None:
    client = TestClient(app)
    page, script = client.get("/").text, client.get("/static/app.js").text
    assert 'data-nav="exceptions"' in page and 'id="exceptions-count"' in page
    for path in ("/custodian/breaks", "/custodian/exceptions", "/custodian/unknown-securities"):
        assert path in script
    assert "/custodian/breaks/${encodeURIComponent(id)}/resolve" in script
    assert 'data-resolution="keep-ours"' in script
    assert 'data-resolution="accept-custodian"' in script
    listed = re.search(r"const OPERATOR_ROLES = \[([^\]]*)\]", script)
    assert listed is not None
    operators = {r.value for r in Role if Permission.OPERATE in PERMISSIONS[r]}
    assert set(re.findall(r'"([^"]+)"', listed.group(1))) == operators


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_dashboard_script_parses() -> None:
    checked = subprocess.run(
        ["node", "--check", str(STATIC_DIR / "app.js")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
