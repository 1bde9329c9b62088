"""A private Postfix submission server on 127.0.0.1, for tests that need a real one.

One instance lives in a short directory under /tmp (unix socket paths have a length limit) and
never touches /etc/postfix:

    D/etc/main.cf, master.cf     configuration (every service with chroot n)
    D/etc/server.pem             key and certificate for "localhost" and 127.0.0.1 (root 0600)
    D/etc/sasl/smtpd.conf        Cyrus SASL: auxprop over sasldb, PLAIN and LOGIN
    D/etc/sasl/sasldb2           the one user (root:postfix 0640; root 0600 gives 454 4.7.0)
    D/ca.pem                     the trustme CA that signed server.pem
    D/spool, D/data              queue and data directories
    D/mail/sink/new/             every accepted message, one file each (a catch-all Maildir)
    D/maillog                    Postfix's log (there is no syslog; commands print to a tty only)

Two smtpd services: STARTTLS on `starttls_port` (TLS required before AUTH or MAIL) and implicit
TLS on `tls_port`. Only an authenticated client may send; nothing trusts the client's address.

Use it through the fixtures: `pytest_plugins = ["tests.support.postfix"]` in a test module (or
in the root conftest.py), then ask for `postfix` (the session's server, its Maildir emptied for
each test) or `postfix_server` (the session's server as is). Without Postfix, saslpasswd2 or root
the tests are skipped; with CI=true they fail instead, because CI installs them
(.ci/system-packages).

Test modules import PostfixServer from here before pytest loads this file as their plugin, too
late for assertion rewriting (which it does not need): PYTEST_DONT_REWRITE keeps pytest from
warning about that.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest
import trustme

__all__ = [
    "PostfixServer",
    "PostfixStartError",
    "postfix",
    "postfix_server",
    "postfix_unavailable_reason",
    "require_postfix",
]

HOST = "127.0.0.1"
# Not $TMPDIR nor pytest's tmp_path: either can be too deep. mkdtemp makes the name unguessable.
INSTANCE_PARENT = Path("/tmp")  # noqa: S108
SASL_REALM = "mailconnect.example"  # .test is special-use: address validators refuse it
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
_SBIN_PATH = "/usr/sbin:/sbin"
_PLAIN_MECHANISM_GLOB = "/usr/lib/*/sasl2/libplain.so*"


class PostfixStartError(RuntimeError):
    """The private instance did not come up; the message carries the tail of its maillog."""


# --- availability ------------------------------------------------------------------------------


def _find_program(name: str) -> str | None:
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), _SBIN_PATH) if p)
    return shutil.which(name, path=search)


def postfix_unavailable_reason() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    missing = [name for name in ("postfix", "saslpasswd2") if _find_program(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed: run .ci/system-packages "
            "(Debian packages postfix, sasl2-bin, libsasl2-modules)"
        )
    if not glob.glob(_PLAIN_MECHANISM_GLOB):
        return "the SASL PLAIN mechanism is missing: install the Debian package libsasl2-modules"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no 'postfix' user: install the Debian package postfix"
    return None


def require_postfix() -> None:
    """Skip the calling test when Postfix cannot run; fail instead when CI is "true"."""
    reason = postfix_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide a private Postfix, but {reason}", pytrace=False)
    pytest.skip(reason)


# --- ports ---------------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out for 127.0.0.1, all held at once so they differ."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _greeting(port: int, tls: ssl.SSLContext | None) -> bytes:
    """The first reply line on port (after a TLS handshake when tls is given); b"" on failure."""
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((HOST, port), timeout=5.0))
            if tls is not None:
                sock = stack.enter_context(tls.wrap_socket(sock, server_hostname="localhost"))
            with sock.makefile("rb") as reader:
                line = reader.readline(1000)
            sock.sendall(b"QUIT\r\n")
            return line
    except OSError:
        return b""


def _listening_inodes(port: int) -> set[int]:
    """Socket inodes listening on 127.0.0.1:port or *:port (IPv4), from /proc/net/tcp.

    The kernel writes addresses in host byte order: 127.0.0.1 is 0100007F on little-endian CPUs.
    """
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] in wanted and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(int(fields[9]))
    return inodes


def _processes_holding(inodes: set[int]) -> set[int]:
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:  # gone, or not ours to read
            continue
        if links & targets:
            holders.add(int(proc.name))
    return holders


# --- the instance --------------------------------------------------------------------------------


@dataclass
class PostfixServer:
    """One private Postfix instance. `start()` builds and starts it; `stop()` removes everything."""

    directory: Path
    starttls_port: int
    tls_port: int
    username: str
    password: str = field(repr=False)
    ca: trustme.CA = field(repr=False)
    host: str = HOST
    sender: str = f"sender@{SASL_REALM}"

    # --- paths ---

    @property
    def config_directory(self) -> Path:
        return self.directory / "etc"

    @property
    def ca_pem_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def maillog_path(self) -> Path:
        return self.directory / "maillog"

    @property
    def maildir_new(self) -> Path:
        return self.directory / "mail" / "sink" / "new"

    @property
    def master_pid_path(self) -> Path:
        return self.directory / "spool" / "pid" / "master.pid"

    # --- life cycle ---

    @classmethod
    def start(
        cls, username: str = f"probe@{SASL_REALM}", password: str | None = None
    ) -> PostfixServer:
        """Build a fresh instance on two free loopback ports and start it; wait until it serves."""
        starttls_port, tls_port = _free_ports(2)
        server = cls(
            directory=Path(tempfile.mkdtemp(prefix="pfx-", dir=INSTANCE_PARENT)),
            starttls_port=starttls_port,
            tls_port=tls_port,
            username=username,
            password=password if password is not None else secrets.token_urlsafe(18),
            ca=trustme.CA(),
        )
        try:
            server._build()
            server._postfix("start")
            server._wait_until_serving()
            server._check_ports_are_ours()
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop the master, wait until both ports are closed, delete the directory."""
        try:
            if self.master_pid_path.exists():
                self._postfix("stop", check=False)
                if not self._wait_for_ports_closed(STOP_TIMEOUT):
                    self._postfix("abort", check=False)
                    if not self._wait_for_ports_closed(STOP_TIMEOUT):
                        raise PostfixStartError(
                            self._explain(f"Postfix in {self.directory} did not stop")
                        )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostfixServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what tests use ---

    def client_tls_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this instance's CA."""
        return ssl.create_default_context(cafile=str(self.ca_pem_path))

    def messages(self) -> list[Path]:
        """Delivered messages, oldest first."""
        if not self.maildir_new.is_dir():
            return []
        return sorted(self.maildir_new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def clear_messages(self) -> None:
        for path in self.messages():
            path.unlink(missing_ok=True)

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[Path]:
        """Poll the Maildir until it holds at least n messages; return them, oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= n:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    self._explain(f"{len(found)} of {n} messages arrived within {timeout} s")
                )
            time.sleep(0.01)

    def maillog_tail(self, lines: int = 30) -> str:
        try:
            text = self.maillog_path.read_text(errors="replace")
        except OSError:
            return "(no maillog)"
        return "\n".join(text.splitlines()[-lines:])

    # --- building ---

    def _build(self) -> None:
        postfix_user = pwd.getpwnam("postfix")
        uid, gid = postfix_user.pw_uid, postfix_user.pw_gid
        self.directory.chmod(0o755)  # mkdtemp's 0700 would lock out the postfix user
        etc = self.config_directory
        (etc / "sasl").mkdir(parents=True, mode=0o755)
        (self.directory / "spool").mkdir(mode=0o755)
        for owned_by_postfix in ("data", "mail"):
            path = self.directory / owned_by_postfix
            path.mkdir(mode=0o700)
            os.chown(path, uid, gid)

        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        self.ca_pem_path.chmod(0o644)
        server_pem = etc / "server.pem"
        server_pem.touch(mode=0o600)
        self.ca.issue_cert("localhost", HOST).private_key_and_cert_chain_pem.write_to_path(
            str(server_pem)
        )

        (etc / "master.cf").write_text(self._master_cf())
        (etc / "sasl" / "smtpd.conf").write_text(self._sasl_conf())
        self._create_sasl_user(gid)
        main_cf = etc / "main.cf"
        main_cf.write_text(self._main_cf(uid, gid))
        # Postfix waits about 2 s at start when main.cf is younger than that; backdate it.
        old = time.time() - 60
        os.utime(main_cf, (old, old))

    def _main_cf(self, uid: int, gid: int) -> str:
        d = self.directory
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": f"{d}/spool",
            "data_directory": f"{d}/data",
            "maillog_file": f"{d}/maillog",
            "maillog_file_prefixes": f"{d}",
            "myhostname": "localhost",
            "mydestination": "",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": f"{HOST}/32",
            "biff": "no",
            "smtpd_tls_chain_files": f"{d}/etc/server.pem",
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_auth_only": "yes",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": f"{d}/etc/sasl",
            "smtpd_sasl_local_domain": SASL_REALM,
            "smtpd_delay_reject": "no",
            # Never permit_mynetworks: every client here is on loopback and would relay unasked.
            "smtpd_sender_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "virtual_mailbox_domains": "static:all",
            "virtual_mailbox_base": f"{d}/mail",
            "virtual_mailbox_maps": "static:sink/",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": "1",
        }
        return "".join(f"{key} = {value}\n" for key, value in settings.items())

    def _master_cf(self) -> str:
        # service type private unpriv chroot wakeup maxproc command; chroot "y" breaks sasldb.
        services = [
            f"{HOST}:{self.starttls_port} inet n - n - - smtpd",
            f"{HOST}:{self.tls_port} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n"

    def _sasl_conf(self) -> str:
        return (
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            "mech_list: PLAIN LOGIN\n"
            f"sasldb_path: {self.config_directory}/sasl/sasldb2\n"
        )

    def _create_sasl_user(self, postfix_gid: int) -> None:
        sasldb = self.config_directory / "sasl" / "sasldb2"
        user, _, realm = self.username.partition("@")
        # The password goes on stdin, never on a command line.
        result = subprocess.run(
            [
                _program("saslpasswd2"),
                "-p",
                "-c",
                "-f",
                str(sasldb),
                "-u",
                realm or SASL_REALM,
                user,
            ],
            input=self.password + "\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise PostfixStartError(f"saslpasswd2 failed: {result.stderr.strip()}")
        os.chown(sasldb, 0, postfix_gid)
        sasldb.chmod(0o640)

    # --- running ---

    def _postfix(self, action: str, *, check: bool = True) -> None:
        result = subprocess.run(
            [_program("postfix"), "-c", str(self.config_directory), action],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise PostfixStartError(
                self._explain(f"postfix {action} exited {result.returncode}: {output}")
            )

    def _wait_until_serving(self) -> None:
        """Both ports accept a connection and greet with 220 (the implicit one after TLS)."""
        deadline = time.monotonic() + START_TIMEOUT
        for label, port, tls in (
            ("STARTTLS", self.starttls_port, None),
            ("implicit TLS", self.tls_port, self.client_tls_context()),
        ):
            while not _accepts(port):
                if time.monotonic() >= deadline:
                    raise PostfixStartError(
                        self._explain(
                            f"{label} port {port} did not accept within {START_TIMEOUT} s"
                        )
                    )
                time.sleep(0.02)
            greeting = _greeting(port, tls)
            if not greeting.startswith(b"220 "):
                raise PostfixStartError(
                    self._explain(f"{label} port {port} gave no 220 greeting: {greeting!r}")
                )

    def _wait_for_ports_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _accepts(self.starttls_port) or _accepts(self.tls_port):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _check_ports_are_ours(self) -> None:
        """Exactly one listening socket per port, held by our master (collisions are silent)."""
        master_pid = int(self.master_pid_path.read_text().strip())
        for port in (self.starttls_port, self.tls_port):
            inodes = _listening_inodes(port)
            holders = _processes_holding(inodes)
            if len(inodes) != 1 or master_pid not in holders:
                raise PostfixStartError(
                    self._explain(
                        f"port {port}: {len(inodes)} listening sockets held by {sorted(holders)}, "
                        f"expected one held by our master {master_pid}"
                    )
                )

    def _explain(self, problem: str) -> str:
        return f"{problem}\n--- tail of {self.maillog_path} ---\n{self.maillog_tail()}"


def _program(name: str) -> str:
    path = _find_program(name)
    if path is None:
        raise PostfixStartError(f"{name} not found")
    return path


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postfix_server() -> Iterator[PostfixServer]:
    """The session's private Postfix: started once, stopped and deleted at the end."""
    require_postfix()
    with PostfixServer.start() as server:
        yield server


@pytest.fixture
def postfix(postfix_server: PostfixServer) -> PostfixServer:
    """The session's Postfix with an empty Maildir, so `wait_for_messages(1)` means this test's."""
    postfix_server.clear_messages()
    return postfix_server
