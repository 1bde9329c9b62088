"""The private Postfix fixture behaves like a strict submission server, checked with smtplib.

These tests pin the server's behaviour that the connection tests rely on: login only after TLS,
only authenticated senders, the exact replies for the failures, and a certificate for "localhost"
signed by the fixture's own CA.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.support import postfix as postfix_module
from tests.support.postfix import PostfixServer

pytestmark = pytest.mark.postfix

RECIPIENT = "someone@customer.example"


def _message(server: PostfixServer, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = server.sender
    message["To"] = RECIPIENT
    message["Subject"] = subject
    message.set_content("Sent by the Postfix fixture tests.\n")
    return message


def _plain_blob(username: str, password: str) -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


# --- STARTTLS port -------------------------------------------------------------------------------


def test_starttls_then_auth_plain_delivers_to_the_maildir(postfix: PostfixServer) -> None:
    subject = f"fixture test {uuid.uuid4()}"
    with smtplib.SMTP(postfix.host, postfix.starttls_port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        client.starttls(context=postfix.client_tls_context())
        client.ehlo("client.test")
        assert set(client.esmtp_features["auth"].upper().split()) == {"PLAIN", "LOGIN"}
        client.user, client.password = postfix.username, postfix.password  # what auth_* read
        code, _ = client.auth("PLAIN", client.auth_plain, initial_response_ok=True)
        assert code == 235
        assert client.send_message(_message(postfix, subject)) == {}

    (delivered,) = postfix.wait_for_messages(1)
    text = delivered.read_text()
    assert f"Subject: {subject}" in text
    assert "with ESMTPSA" in text  # Postfix's mark for "over TLS, authenticated"


def test_auth_before_starttls_is_refused(postfix: PostfixServer) -> None:
    with smtplib.SMTP(postfix.host, postfix.starttls_port, timeout=10) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")  # not even offered in clear text
        # A blob for a user that does not exist: no real secret crosses the wire unencrypted.
        code, text = client.docmd("AUTH", "PLAIN " + _plain_blob("nobody", "not-a-secret"))
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        code, text = client.mail(postfix.sender)
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")


def test_mail_without_auth_is_rejected(postfix: PostfixServer) -> None:
    with smtplib.SMTP(postfix.host, postfix.starttls_port, timeout=10) as client:
        client.starttls(context=postfix.client_tls_context())
        client.ehlo("client.test")
        code, text = client.mail(postfix.sender)
        assert code == 554
        assert text == f"5.7.1 <{postfix.sender}>: Sender address rejected: Access denied".encode()


def test_wrong_password_gets_535_5_7_8(postfix: PostfixServer) -> None:
    with smtplib.SMTP(postfix.host, postfix.starttls_port, timeout=10) as client:
        client.starttls(context=postfix.client_tls_context())
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login(postfix.username, postfix.password + "-wrong")
    assert caught.value.smtp_code == 535
    assert caught.value.smtp_error == b"5.7.8 Error: authentication failed: authentication failure"


# --- implicit TLS port ---------------------------------------------------------------------------


def test_implicit_tls_port_offers_auth_and_accepts_login(postfix: PostfixServer) -> None:
    subject = f"implicit TLS {uuid.uuid4()}"
    with smtplib.SMTP_SSL(
        postfix.host, postfix.tls_port, context=postfix.client_tls_context(), timeout=10
    ) as client:
        client.ehlo("client.test")
        assert not client.has_extn("starttls")  # already encrypted
        assert "LOGIN" in client.esmtp_features["auth"].upper().split()
        client.user, client.password = postfix.username, postfix.password
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        assert client.send_message(_message(postfix, subject)) == {}
    (delivered,) = postfix.wait_for_messages(1)
    assert f"Subject: {subject}" in delivered.read_text()


# --- the certificate -----------------------------------------------------------------------------


def _handshake(port: int, context: ssl.SSLContext, server_hostname: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_certificate_verifies_against_the_fixture_ca(postfix: PostfixServer, name: str) -> None:
    with _handshake(postfix.tls_port, postfix.client_tls_context(), name) as tls:
        peer = tls.getpeercert()
    assert peer is not None
    assert ("DNS", "localhost") in peer["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]


def test_certificate_is_not_valid_for_another_name(postfix: PostfixServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(postfix.tls_port, postfix.client_tls_context(), "mail.example.com").close()


def test_certificate_is_not_trusted_without_the_fixture_ca(postfix: PostfixServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(postfix.tls_port, ssl.create_default_context(), "localhost").close()


# --- the fixture itself --------------------------------------------------------------------------


def test_instance_is_private_and_short_pathed(postfix: PostfixServer) -> None:
    assert postfix.starttls_port != postfix.tls_port
    assert postfix.directory.parent == postfix_module.INSTANCE_PARENT
    assert len(str(postfix.directory)) < 40  # unix socket paths below it stay short
    assert postfix.ca_pem_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert postfix.password not in repr(postfix)
    sasldb = postfix.config_directory / "sasl" / "sasldb2"
    assert sasldb.stat().st_mode & 0o777 == 0o640


def test_missing_postfix_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postfix_module, "_find_program", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="postfix and saslpasswd2 not installed"):
        postfix_module.require_postfix()


def test_missing_postfix_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postfix_module, "_find_program", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must provide a private Postfix"):
        postfix_module.require_postfix()


def test_a_second_listener_on_a_port_is_detected(postfix: PostfixServer) -> None:
    # Postfix listens with SO_REUSEPORT, so a colliding bind succeeds silently and splits the
    # connections; the start-up check must notice the extra socket.
    intruder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        intruder.bind(("127.0.0.1", postfix.starttls_port))
        intruder.listen(1)
        with pytest.raises(postfix_module.PostfixStartError, match="2 listening sockets"):
            postfix._check_ports_are_ours()
    postfix._check_ports_are_ours()


class _BrokenPostfix(PostfixServer):
    def _main_cf(self, uid: int, gid: int) -> str:
        missing = self.config_directory / "missing.pem"
        return super()._main_cf(uid, gid) + f"smtpd_tls_chain_files = {missing}\n"


def test_a_failed_start_reports_the_maillog_and_cleans_up(postfix_server: PostfixServer) -> None:
    # Asks for the session server only to share its skip; the broken one is a second instance.
    with pytest.raises(postfix_module.PostfixStartError) as caught:
        _BrokenPostfix.start()
    message = str(caught.value)
    assert "implicit TLS port" in message
    assert "error opening chain file" in message  # smtpd's own complaint, from the maillog
    maillog = re.search(r"--- tail of (\S+)/maillog ---", message)
    assert maillog is not None
    assert not Path(maillog.group(1)).exists()
