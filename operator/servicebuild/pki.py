"""The certificates of a builder pool's mTLS: a CA per pool, the daemon's server certificate, the operator's
client certificate, and when each is due for renewal. Pure: the time is passed in (keys are random).

The CA signs both ends: buildkitd verifies clients against it (`--tlscacert`), so only a holder of a
client certificate of this CA — the operator, which keeps the CA and its client key in its own namespace —
can submit builds. ECDSA P-256: small, fast to make, and what Go's TLS stack (BuildKit's) handles natively.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=5 * 365)
LEAF_LIFETIME = timedelta(days=365)
RENEW_WHEN_LEFT = 1 / 3
"""A certificate is renewed once less than a third of its lifetime is left: months before it expires, so a
renewal that fails for a while (an API outage) is retried long before anything stops working."""
BACKDATE = timedelta(minutes=5)
"""`notBefore` this far back: a peer whose clock is a little behind still accepts a new certificate."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        """The certificate's SHA-256, hex: changes with every renewal."""
        return hashlib.sha256(self.cert_pem).hexdigest()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def new_ca(common_name: str, now: datetime) -> KeyPair:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue(ca: KeyPair, common_name: str, now: datetime, server_names: tuple[str, ...] = ()) -> KeyPair:
    """A leaf certificate signed by `ca`: a server's for these DNS names, or a client's without names."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the pool CA's key is not an EC key")
    key = _new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in server_names]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _expiring(cert: x509.Certificate, now: datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return end - now < (end - start) * RENEW_WHEN_LEFT


def renewal_due(
    pair: KeyPair | None, now: datetime, issuer: KeyPair | None = None, server_names: tuple[str, ...] = ()
) -> bool:
    """Whether `pair` must be made anew: missing or unreadable, a third or less of its lifetime left, not
    signed by `issuer` (a renewed CA), or serving other names than `server_names` (for a server)."""
    if pair is None:
        return True
    try:
        cert = x509.load_pem_x509_certificate(pair.cert_pem)
        serialization.load_pem_private_key(pair.key_pem, password=None)
        if issuer is not None:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(issuer.cert_pem))
    except (ValueError, TypeError, InvalidSignature):
        return True
    if _expiring(cert, now):
        return True
    if server_names:
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return True
        return sorted(names.get_values_for_type(x509.DNSName)) != sorted(server_names)
    return False
