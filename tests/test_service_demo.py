"""End to end: `serve --demo` in a subprocess; the printed curl command sends a first e-mail, which
arrives at the demo's capture server (page and .eml file) and fires the signed webhook."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
from tests.support.service import start_service, wait_for


def test_serve_demo_sends_a_first_email_and_fires_the_webhook(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'mailconnect.db'}"
    service = start_service(url, tmp_path / "data", args=("--demo",))
    try:
        banner = wait_for(
            lambda: "API key for the demo tenant" in service.banner and service.banner
        )
        key = banner.split("API key for the demo tenant: ", 1)[1].split()[0]
        assert f"{service.url}/demo" in banner
        curl = banner[banner.index("curl ") : banner.index("\n\n", banner.index("curl "))]
        assert "Authorization: Bearer " + key in curl
        if shutil.which("curl"):
            pasted = subprocess.run(
                ["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=True
            )
            assert '"created":true' in pasted.stdout
        with service.client(key) as client:
            accepted = client.post(
                "/v1/messages",
                json={"to": ["second@example.org"], "subject": "Second", "text": "again"},
            )
            assert accepted.status_code == 202, accepted.text
            message_id = accepted.json()["id"]

            def sent() -> bool:
                return bool(client.get(f"/v1/messages/{message_id}").json()["state"] == "sent")

            wait_for(sent)
        with httpx.Client(base_url=service.url) as page:
            captured = wait_for(
                lambda: [
                    m
                    for m in page.get("/demo/messages.json").json()["data"]
                    if m["subject"] == "Second"
                ]
            )[0]
            assert captured["rcpt_tos"] == ["second@example.org"]
            assert captured["mail_from"] == "jobs@demo.example"
            assert Path(captured["file"]).read_bytes().startswith(b"")
            assert b"Subject: Second" in Path(captured["file"]).read_bytes()
            events = wait_for(
                lambda: [
                    e
                    for e in page.get("/demo/events.json").json()["data"]
                    if e["type"] == "message.sent" and e["data"]["message"]["id"] == message_id
                ]
            )
            assert events[0]["signature_valid"] is True
            html = page.get("/demo").text
            assert "Second" in html
            assert "message.sent" in html
        assert (tmp_path / "data" / "demo" / "ca.pem").exists()
        inbox = list((tmp_path / "data" / "demo" / "inbox").glob("*.eml"))
        assert len(inbox) >= 1
    finally:
        service.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal as its exit status.
    assert service.process.returncode in (0, -15)
    assert "Application shutdown complete" in service.logs()
    assert "login_data" not in service.logs()  # aiosmtpd's own deprecation, not the operator's


def test_a_second_demo_start_reuses_the_tenant_and_revokes_the_old_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'mailconnect.db'}"
    keys = []
    for _ in range(2):
        service = start_service(url, tmp_path / "data", args=("--demo",))
        try:
            banner = wait_for(
                lambda s=service: "API key for the demo tenant" in s.banner and s.banner
            )
            keys.append(banner.split("API key for the demo tenant: ", 1)[1].split()[0])
            with service.client(keys[-1]) as client:
                assert client.get("/v1/connections").json()["data"][0]["name"] == "demo"
            if len(keys) == 2:
                with service.client(keys[0]) as old:
                    assert old.get("/v1/connections").status_code == 401
                with service.operator() as operator:
                    tenants = operator.get("/v1/tenants").json()["data"]
                    assert [t["external_id"] for t in tenants] == ["demo"]
        finally:
            service.stop()
