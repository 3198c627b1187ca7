"""A builder pool's certificates.

We test these aspects:
- the chain: server and client certificates are signed by the pool's CA, which may sign leaves only;
- the server certificate names the Service's DNS names and serves; the client certificate authenticates
  a client and nothing else;
- a real mutual TLS handshake (Python's ssl, as strict as Go's about EKU and names): the operator's client
  is accepted; a client without a certificate, or with one of another pool's CA, is refused;
- renewal, with an injected clock: not before a third of the lifetime is left, then due; due for a missing,
  unreadable, foreign-signed or misnamed certificate.
"""

import contextlib
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from servicebuild.pki import CA_LIFETIME, LEAF_LIFETIME, KeyPair, issue, new_ca, renewal_due

NOW = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
NAMES = ("builders-buildkitd", "builders-buildkitd.shop.svc", "builders-buildkitd.shop.svc.cluster.local")


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return new_ca("builderpool shop/builders", NOW)


@pytest.fixture(scope="module")
def server(ca: KeyPair) -> KeyPair:
    return issue(ca, NAMES[1], NOW, NAMES)


@pytest.fixture(scope="module")
def client(ca: KeyPair) -> KeyPair:
    return issue(ca, "servicebuild-operator", NOW)


def cert(pair: KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def test_the_chain(ca: KeyPair, server: KeyPair, client: KeyPair) -> None:
    constraints = cert(ca).extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    for leaf in (server, client):
        cert(leaf).verify_directly_issued_by(cert(ca))
        assert not cert(leaf).extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_names_and_usages(server: KeyPair, client: KeyPair) -> None:
    names = cert(server).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == list(NAMES)
    usage = cert(server).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = cert(client).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert(client).extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_lifetimes(ca: KeyPair, server: KeyPair) -> None:
    assert cert(ca).not_valid_after_utc == NOW + CA_LIFETIME
    assert cert(server).not_valid_after_utc == NOW + LEAF_LIFETIME
    assert cert(server).not_valid_before_utc < NOW


def _files(tmp_path: Path, name: str, pair: KeyPair) -> tuple[str, str]:
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(pair.cert_pem)
    key_path.write_bytes(pair.key_pem)
    return str(cert_path), str(key_path)


def handshake(tmp_path: Path, ca: KeyPair, server: KeyPair, client: KeyPair | None) -> str | None:
    """A TLS handshake between the daemon's side (client certificates required, verified by the CA) and a
    client, over a socket pair; None when both sides agree, else the server's error."""
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(*_files(tmp_path, "server", server))
    server_context.load_verify_locations(ca_path)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(ca_path)
    if client is not None:
        client_context.load_cert_chain(*_files(tmp_path, "client", client))
    left, right = socket.socketpair()
    errors: list[str] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(left, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=serve)
    thread.start()
    with (
        contextlib.suppress(ssl.SSLError, OSError),
        client_context.wrap_socket(right, server_hostname=NAMES[1]) as tls,
    ):
        tls.recv(2)
    thread.join(timeout=30)
    return errors[0] if errors else None


def test_the_operators_client_is_accepted(
    tmp_path: Path, ca: KeyPair, server: KeyPair, client: KeyPair
) -> None:
    assert handshake(tmp_path, ca, server, client) is None


def test_a_client_without_a_certificate_is_refused(tmp_path: Path, ca: KeyPair, server: KeyPair) -> None:
    assert handshake(tmp_path, ca, server, None) is not None


def test_a_client_of_another_pools_ca_is_refused(tmp_path: Path, ca: KeyPair, server: KeyPair) -> None:
    stranger = issue(new_ca("builderpool other/builders", NOW), "servicebuild-operator", NOW)
    assert handshake(tmp_path, ca, server, stranger) is not None


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [
        (timedelta(0), False),
        (LEAF_LIFETIME * 0.6, False),
        (LEAF_LIFETIME * 0.7, True),
        (LEAF_LIFETIME + timedelta(days=1), True),
    ],
)
def test_a_leaf_is_renewed_once_a_third_of_its_lifetime_is_left(
    ca: KeyPair, server: KeyPair, elapsed: timedelta, due: bool
) -> None:
    assert renewal_due(server, NOW + elapsed, issuer=ca, server_names=NAMES) is due


def test_the_ca_is_renewed_once_a_third_of_its_lifetime_is_left(ca: KeyPair) -> None:
    assert not renewal_due(ca, NOW + CA_LIFETIME * 0.6)
    assert renewal_due(ca, NOW + CA_LIFETIME * 0.7)


def test_renewal_is_due_for_what_cannot_serve(ca: KeyPair, server: KeyPair, client: KeyPair) -> None:
    assert renewal_due(None, NOW)
    assert renewal_due(KeyPair(b"not a certificate", server.key_pem), NOW)
    assert renewal_due(KeyPair(server.cert_pem, b"not a key"), NOW)
    other_ca = new_ca("renewed", NOW)
    assert renewal_due(client, NOW, issuer=other_ca), "signed by a CA that was renewed since"
    assert not renewal_due(client, NOW, issuer=ca)
    assert renewal_due(server, NOW, issuer=ca, server_names=(*NAMES, "another-name")), "names changed"
    assert not renewal_due(server, NOW, issuer=ca, server_names=tuple(reversed(NAMES)))
    assert renewal_due(client, NOW, issuer=ca, server_names=NAMES), "a client certificate serves no names"
