"""The site broker's access rules, as ``evpay install``, ``evpay demo`` and the tests write them
for mosquitto (2.0): who may connect, and who may say what on which topic.

Why each rule (issue 27: anyone on an open broker could start, meter, stop and authorize):

- No anonymous client; each client has its own user in a password file (mosquitto's PBKDF2
  format, written here so no ``mosquitto_passwd`` is needed to set up a site).
- A charger writes only in its own topic tree (``{prefix}/charger/<its user>/…``) and reads only
  its own commands; only the gateway's user writes commands and the gateway status. The topic
  therefore tells the gateway who sent a message, and it takes an EVSE's messages only from the
  tree of the charger that EVSE belongs to.
- ``use_username_as_clientid``: the client id is the user name, so no other user can take the
  gateway's id (and its persistent session, and the messages queued in it).
- A listener beyond loopback is TLS only.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from firmware_bridge import contract as m
from firmware_bridge.everest import BASE as EVEREST

GATEWAY_USER = "evpay-gateway"
EVEREST_USER = "everest"  # EVerest's own connection, when the site maps to EVerest's API
DOCTOR_USER = (
    "evpay-doctor"  # a charger account owning no EVSE: `evpay doctor` probes the ACL with it
)
_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


MESSAGE_SIZE_LIMIT = 64 * 1024  # bytes of payload the broker takes in one message


def password_entry(user: str, password: str) -> str:
    """One line of a mosquitto password file: ``user:$7$iterations$salt$PBKDF2-SHA512``."""
    if ":" in user or "\n" in user or not user:
        raise ValueError(f"not a broker user name: {user!r}")
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    b64 = base64.b64encode
    return f"{user}:$7${_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def password_file(users: dict[str, str]) -> str:
    return "".join(password_entry(user, password) + "\n" for user, password in users.items())


def acl(prefix: str = "evpay/v1", gateway: str = GATEWAY_USER, everest: str = EVEREST_USER) -> str:
    """The ACL file: the gateway, EVerest, and (a pattern for every other user) the chargers."""
    tree = f"{prefix}/charger"
    lines = [
        "# Written by evpay (firmware_bridge/broker.py): who may say what on the charger link.",
        "# The gateway: reads every charger's tree, alone writes commands and its status.",
        f"user {gateway}",
        f"topic read {tree}/#",
        *(f"topic write {tree}/+/evse/+/{name}" for name in sorted(m.COMMANDS)),
        f"topic readwrite {m.status_topic(prefix)}",
        f"topic read {EVEREST}/evse_manager_consumer/+/e2m/#",
        f"topic write {EVEREST}/+/+/m2e/#",
        "",
        "# EVerest (mapping = everest): its modules' events, and what the gateway asks of them.",
        f"user {everest}",
        f"topic write {EVEREST}/+/+/e2m/#",
        f"topic read {EVEREST}/+/+/m2e/#",
        "",
        "# Every charger (%u: its user name) writes only in its own tree, reads its commands.",
        *(f"pattern write {tree}/%u/evse/+/{name}" for name in m.INBOUND),
        *(f"pattern read {tree}/%u/evse/+/{name}" for name in sorted(m.COMMANDS)),
        f"pattern read {m.status_topic(prefix)}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TlsListener:
    port: int
    certfile: str
    keyfile: str
    host: str = "0.0.0.0"  # noqa: S104 - a TLS listener is the one meant to be reachable
    cafile: str | None = None  # set: chargers must present a client certificate from this CA


def mosquitto_conf(
    *,
    port: int,
    password_path: str,
    acl_path: str,
    host: str = "127.0.0.1",
    tls: TlsListener | None = None,
    persistence_dir: str | None = None,
) -> str:
    """A mosquitto configuration with authentication and the ACL on every listener; a plain
    listener only on loopback."""
    if host not in _LOOPBACK:
        raise ValueError(f"a plain listener on {host} is reachable beyond loopback: use TLS")
    lines = [
        "# Written by evpay (firmware_bridge/broker.py): authenticated, ACL'd charger link.",
        "per_listener_settings false",
        "allow_anonymous false",
        # the largest valid message is a stop with an 8 KiB signed record: a charger account
        # cannot push megabytes into the gateway's queue (mosquitto's default is 256 MB)
        f"message_size_limit {MESSAGE_SIZE_LIMIT}",
        f"password_file {password_path}",
        f"acl_file {acl_path}",
        f"listener {port} {host}",
        "use_username_as_clientid true",  # a listener's option: after each listener line
    ]
    if tls is not None:
        lines += [f"listener {tls.port} {tls.host}", "use_username_as_clientid true"]
        lines += [f"certfile {tls.certfile}"]
        lines += [f"keyfile {tls.keyfile}", "tls_version tlsv1.2"]
        if tls.cafile is not None:
            lines += [f"cafile {tls.cafile}", "require_certificate true"]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir.rstrip('/')}/"]
    return "\n".join(lines) + "\n"


TLS_EXAMPLE = """\
# Reachable beyond this machine (chargers on the site network)? Only over TLS: uncomment, point
# at the broker's certificate and key, and give each charger its own user (mosquitto_passwd).
# The gateway keeps the loopback listener above.
#listener 8883 0.0.0.0
#use_username_as_clientid true
#certfile /etc/mosquitto/certs/broker.crt
#keyfile /etc/mosquitto/certs/broker.key
#tls_version tlsv1.2
# and, to require client certificates from your own CA:
#cafile /etc/mosquitto/certs/chargers-ca.crt
#require_certificate true
"""
