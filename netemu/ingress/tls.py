"""TLS termination for netemu's ingress controller: which certificate a TLS handshake gets.

Each owned Ingress's ``tls`` entries name hosts (``*.foo.com`` wildcards included; an entry
without hosts covers the Ingress's rule hosts) and a Secret in the Ingress's namespace holding
``tls.crt`` and ``tls.key`` (a ``kubernetes.io/tls`` Secret). ``build`` turns them into an immutable
``CertificateTable``; the listener's SNI callback asks the current table for each new handshake, so
a changed Secret or Ingress reaches new connections without a restart. A handshake for a host
without a usable certificate (or without SNI) gets the default certificate, a self-signed one made
at start like ingress-nginx's "Kubernetes Ingress Controller Fake Certificate". The oldest Ingress
wins a host claimed twice. ``ssl.SSLContext`` loads certificates only from paths, so each distinct
certificate is loaded once from memory files (``netemu.memfiles``: the key is never on disk);
contexts are reused across tables while their Secret's bytes stay the same.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from netemu.api.ingress import Ingress
from netemu.api.objects import Secret
from netemu.memfiles import memory_path

log = logging.getLogger(__name__)

FAKE_CERTIFICATE_CN = "Kubernetes Ingress Controller Fake Certificate"
SecretKey = tuple[str, str]  # (namespace, name)


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context holding one certificate chain and its key (PEM bytes); ssl.SSLError if invalid."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_alpn_protocols(["http/1.1"])
    # load_cert_chain reads only paths: memory files, never on disk
    with memory_path("netemu-ingress-tls.crt", cert_pem) as cert_path, \
            memory_path("netemu-ingress-tls.key", key_pem) as key_path:
        context.load_cert_chain(cert_path, key_path)
    return context


@functools.lru_cache(maxsize=1)
def fake_certificate() -> tuple[bytes, bytes]:
    """The default certificate and key (PEM), self-signed, made once per process."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CERTIFICATE_CN)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@functools.lru_cache(maxsize=1)
def default_context() -> ssl.SSLContext:
    return server_context(*fake_certificate())


@dataclass(frozen=True)
class CertificateTable:
    exact: Mapping[str, ssl.SSLContext] = field(default_factory=dict)
    wildcard: Mapping[str, ssl.SSLContext] = field(default_factory=dict)  # "foo.com" for *.foo.com
    contexts: Mapping[str, ssl.SSLContext] = field(default_factory=dict)  # by digest of the Secret's bytes

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return default_context()
        host = server_name.lower()
        found = self.exact.get(host)
        if found is None:
            _, dot, parent = host.partition(".")
            found = self.wildcard.get(parent) if dot else None
        return found if found is not None else default_context()


def _pem(secret: Secret, key: str) -> bytes:
    value = secret.data.get(key)
    if not value:
        raise ValueError(f"no {key}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{key} is not base64") from exc


def build(ingresses: Iterable[Ingress], secrets: Mapping[SecretKey, Secret],
          previous: CertificateTable | None = None) -> CertificateTable:
    """The certificates of ``ingresses`` (oldest first wins a host), reusing ``previous``'s contexts."""
    reusable = previous.contexts if previous is not None else {}
    contexts: dict[str, ssl.SSLContext] = {}
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    ordered = sorted(ingresses, key=lambda i: (i.metadata.creation_timestamp or "", i.metadata.namespace,
                                                i.metadata.name))
    for ing in ordered:
        ns = ing.metadata.namespace
        for entry in ing.spec.tls:
            if not entry.secret_name:
                continue
            secret = secrets.get((ns, entry.secret_name))
            where = f"Ingress {ns}/{ing.metadata.name}: Secret {ns}/{entry.secret_name}"
            if secret is None:
                log.warning("%s not found; its hosts get the default certificate", where)
                continue
            try:
                cert_pem, key_pem = _pem(secret, "tls.crt"), _pem(secret, "tls.key")
                digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
                context = contexts.get(digest) or reusable.get(digest) or server_context(cert_pem, key_pem)
            except (ValueError, ssl.SSLError) as exc:
                log.warning("%s holds no usable certificate (%s); its hosts get the default certificate", where, exc)
                continue
            contexts[digest] = context
            hosts = entry.hosts or tuple(r.host for r in ing.spec.rules if r.host)
            for host in (h.lower() for h in hosts):
                target = wildcard if host.startswith("*.") else exact
                target.setdefault(host[2:] if host.startswith("*.") else host, context)
    return CertificateTable(exact, wildcard, contexts)


def listener_context(table: Callable[[], CertificateTable]) -> ssl.SSLContext:
    """The context of the HTTPS listener: the default certificate, switched per handshake by SNI to
    the one ``table()`` (asked at each handshake) holds for the requested host."""
    context = server_context(*fake_certificate())

    def choose(connection: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        connection.context = table().context_for(server_name)
        return None

    context.sni_callback = choose
    return context
