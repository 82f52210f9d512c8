"""A cluster's credentials: its own CA, the API server's serving certificate, the admin's client
certificate and a bearer token, made at start and kept 0600 in the verified cluster directory.

Like kind's: one CA per cluster signs a serving certificate for ``127.0.0.1``/``localhost`` (and,
for clients inside the cluster, the ``kubernetes`` Service's ClusterIP and ``kubernetes.default.svc``
with its cluster domain) and a client certificate ``CN=netemu-admin, O=system:masters``. Keys are ECDSA P-256 (fast to make;
every Kubernetes client accepts them). Nothing here listens or decides who may do what.
"""
from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netemu import statedir

from . import CA_CERT, CLIENT_CERT, CLIENT_KEY, SERVER_CERT, SERVER_KEY, TOKEN

ADMIN_USER = "netemu-admin"
ADMIN_GROUP = "system:masters"
VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Credentials:
    """PEM texts of one cluster's CA, server and client pairs, and its bearer token."""
    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    token: str

    def save(self, directory: Path) -> None:
        """Write every part 0600 into the (verified) cluster directory."""
        for name, data in ((CA_CERT, self.ca_cert), (SERVER_CERT, self.server_cert), (SERVER_KEY, self.server_key),
                           (CLIENT_CERT, self.client_cert), (CLIENT_KEY, self.client_key),
                           (TOKEN, self.token.encode())):
            statedir.write_file(directory, name, data)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def make_credentials(cluster: str, *, service_ip: str = "", cluster_domain: str = "cluster.local") -> Credentials:
    """A fresh CA for ``cluster`` and the pairs it signs; the serving certificate also names
    ``service_ip`` (the ``kubernetes`` Service's ClusterIP) when given."""
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"netemu-{cluster}-ca")])
    ca = (_builder(ca_name, ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(name: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = _key()
        builder = (_builder(name, ca_name, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)

    server_cert, server_key = leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
         x509.DNSName("kubernetes.default.svc"), x509.DNSName(f"kubernetes.default.svc.{cluster_domain}"),
         x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
         *([x509.IPAddress(ipaddress.ip_address(service_ip))] if service_ip else [])])
    client_cert, client_key = leaf(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                   x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER)]), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Credentials(ca_cert=_cert_pem(ca), server_cert=server_cert, server_key=server_key,
                       client_cert=client_cert, client_key=client_key, token=secrets.token_urlsafe(32))
