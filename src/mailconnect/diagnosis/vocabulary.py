"""The closed vocabularies of a diagnosis: causes, who must act, session stages, failure kinds.

Every value is stable: callers match on it, store it and translate it. Never rename or reuse one;
add a new value instead and document it here.

Causes (``Cause``)
------------------
Sign-in
    ``bad_credentials``                 the server refused the username or password (or token)
    ``app_password_required``           the account needs an app password, not its normal password
    ``oauth_required_or_basic_auth_disabled``  password sign-in is switched off: use OAuth2
    ``smtp_auth_disabled``              SMTP AUTH is switched off for the mailbox or the tenant
    ``security_defaults_block``         Microsoft Entra security defaults block password sign-in
    ``sign_in_blocked``                 an organisation's sign-in policy (Conditional Access, MFA,
                                        blocked account) refused this sign-in
    ``web_login_required``              the provider wants a person to sign in once in a browser
    ``token_expired_or_invalid``        the OAuth2 access token was refused
    ``auth_required``                   the server wants a sign-in before it accepts mail
    ``auth_mechanism_too_weak``         the server refuses the chosen sign-in method as too weak
    ``auth_not_offered``                the server offers no sign-in (no AUTH in its EHLO reply)
    ``no_common_auth_mechanism``        the server offers only sign-in methods mailconnect lacks
Sender and recipients
    ``send_as_denied``                  the login may not send as the From address
    ``sender_rejected``                 the server refused the sender (envelope or From) address
    ``recipient_rejected``              the server refused a recipient address
    ``relay_denied``                    the server does not forward mail for this client
    ``account_restricted``              the provider stopped this mailbox from sending
    ``tenant_blocked``                  the provider stopped the whole organisation from sending
Limits
    ``rate_limited``                    too much, too fast: wait and send more slowly
    ``daily_limit``                     the daily sending quota is used up
    ``too_many_recipients``             one message has more recipients than allowed
    ``concurrent_connections``          too many connections to one mailbox at once
    ``mailbox_full``                    the sending mailbox is over its storage quota
    ``message_too_large``               the message exceeds the server's size limit
Content and policy
    ``spam_or_policy_block``            a spam filter or policy refused the message or the client
    ``message_format_rejected``         the server refused the message's format or encoding
    ``ehlo_rejected``                   the server refused the name the client greeted it with
Encryption
    ``starttls_required``               the server wants STARTTLS before sign-in or mail
    ``starttls_not_offered``            security is starttls but the server does not offer it
    ``tls_mode_mismatch``               implicit TLS against a STARTTLS port, or the reverse
    ``certificate_invalid``             the server's certificate is untrusted, expired or for
                                        another name
    ``tls_version_too_old``             one side only speaks TLS 1.0 or 1.1
    ``tls_handshake_failed``            the TLS handshake failed for another reason
Network
    ``dns_failure``                     the server name does not resolve
    ``connection_refused``              nothing accepts connections on that port
    ``port_blocked_or_timeout``         no answer at all: usually a firewall drops the packets
    ``network_unreachable``             there is no route to the server's network
    ``banner_timeout``                  connected, but the server never sent its greeting
    ``server_disconnected``             the server closed the connection without a reply
Other
    ``temporary_server_error``          the server has a temporary problem: try again later
    ``unknown``                         not recognised; the explanation still says what the code
                                        class means
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Actor", "Cause", "Failure", "Stage"]


class Cause(StrEnum):
    """Why a connection or a message failed (see the module docstring for each value)."""

    BAD_CREDENTIALS = "bad_credentials"
    APP_PASSWORD_REQUIRED = "app_password_required"  # noqa: S105 - a cause code
    OAUTH_REQUIRED_OR_BASIC_AUTH_DISABLED = "oauth_required_or_basic_auth_disabled"
    SMTP_AUTH_DISABLED = "smtp_auth_disabled"
    SECURITY_DEFAULTS_BLOCK = "security_defaults_block"
    SIGN_IN_BLOCKED = "sign_in_blocked"
    WEB_LOGIN_REQUIRED = "web_login_required"
    TOKEN_EXPIRED_OR_INVALID = "token_expired_or_invalid"  # noqa: S105 - a cause code
    AUTH_REQUIRED = "auth_required"
    AUTH_MECHANISM_TOO_WEAK = "auth_mechanism_too_weak"
    AUTH_NOT_OFFERED = "auth_not_offered"
    NO_COMMON_AUTH_MECHANISM = "no_common_auth_mechanism"
    SEND_AS_DENIED = "send_as_denied"
    SENDER_REJECTED = "sender_rejected"
    RECIPIENT_REJECTED = "recipient_rejected"
    RELAY_DENIED = "relay_denied"
    ACCOUNT_RESTRICTED = "account_restricted"
    TENANT_BLOCKED = "tenant_blocked"
    RATE_LIMITED = "rate_limited"
    DAILY_LIMIT = "daily_limit"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    CONCURRENT_CONNECTIONS = "concurrent_connections"
    MAILBOX_FULL = "mailbox_full"
    MESSAGE_TOO_LARGE = "message_too_large"
    SPAM_OR_POLICY_BLOCK = "spam_or_policy_block"
    MESSAGE_FORMAT_REJECTED = "message_format_rejected"
    EHLO_REJECTED = "ehlo_rejected"
    STARTTLS_REQUIRED = "starttls_required"
    STARTTLS_NOT_OFFERED = "starttls_not_offered"
    TLS_MODE_MISMATCH = "tls_mode_mismatch"
    CERTIFICATE_INVALID = "certificate_invalid"
    TLS_VERSION_TOO_OLD = "tls_version_too_old"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    DNS_FAILURE = "dns_failure"
    CONNECTION_REFUSED = "connection_refused"
    PORT_BLOCKED_OR_TIMEOUT = "port_blocked_or_timeout"
    NETWORK_UNREACHABLE = "network_unreachable"
    BANNER_TIMEOUT = "banner_timeout"
    SERVER_DISCONNECTED = "server_disconnected"
    TEMPORARY_SERVER_ERROR = "temporary_server_error"
    UNKNOWN = "unknown"


class Actor(StrEnum):
    """Who has to do something so that the failure goes away."""

    YOU = "you"  # the person setting the connection up
    IT_ADMIN = "it_admin"  # the company's IT department or mail administrator
    PROVIDER = "provider"  # the mail provider (Google, Microsoft, the hosting company)
    NETWORK = "network"  # a firewall, the internet provider or the cloud host
    APPLICATION = "application"  # the operator of the sending application

    @property
    def label(self) -> str:
        """Who this is, in words a person understands."""
        return _ACTOR_LABELS[self]


_ACTOR_LABELS = {
    Actor.YOU: "you (the person setting up the connection)",
    Actor.IT_ADMIN: "your IT department or mail administrator",
    Actor.PROVIDER: "the mail provider",
    Actor.NETWORK: "the network: a firewall, the internet provider or the cloud host",
    Actor.APPLICATION: "the operator of the sending application",
}


class Stage(StrEnum):
    """The step of an SMTP session a reply or an error belongs to."""

    RESOLVE = "resolve"  # looking up the server's address
    CONNECT = "connect"  # opening the TCP connection and reading the greeting
    TLS = "tls"  # the TLS handshake (implicit TLS or after STARTTLS)
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL_FROM = "mail_from"
    RCPT_TO = "rcpt_to"
    DATA = "data"
    QUIT = "quit"
    UNKNOWN = "unknown"


class Failure(StrEnum):
    """A failure the connection test detects itself, before or instead of a server reply."""

    DNS = "dns"  # the name does not resolve
    DNS_TEMPORARY = "dns_temporary"  # the resolver could not answer right now
    REFUSED = "refused"  # TCP connection refused
    TIMEOUT = "timeout"  # TCP connection timed out
    UNREACHABLE = "unreachable"  # no route to the host or network
    BANNER_TIMEOUT = "banner_timeout"  # connected, but no 220 greeting arrived
    DISCONNECTED = "disconnected"  # the server closed the connection without a reply
    TLS_WRONG_VERSION = "tls_wrong_version"  # TLS handshake met plain text (wrong TLS mode)
    TLS_EXPECTED = "tls_expected"  # no plain greeting, but the port completes a TLS handshake
    TLS_HANDSHAKE = "tls_handshake"  # the TLS handshake failed for another reason
    TLS_PROTOCOL_VERSION = "tls_protocol_version"  # no TLS version in common
    CERTIFICATE_SELF_SIGNED = "certificate_self_signed"
    CERTIFICATE_HOSTNAME = "certificate_hostname"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"  # unknown issuer, incomplete chain
    STARTTLS_NOT_OFFERED = "starttls_not_offered"
    AUTH_NOT_OFFERED = "auth_not_offered"
    NO_COMMON_MECHANISM = "no_common_mechanism"
