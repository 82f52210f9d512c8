"""Service account tokens: JWTs the cluster's API server issues and accepts, as kube-apiserver's.

One ECDSA P-256 key per cluster (kube-apiserver's ``--service-account-signing-key-file``, which
signs ES256 with an EC key and RS256 with an RSA one; made at start in a millisecond, kept 0600 in
the verified cluster directory) signs ES256 JSON Web Signatures in compact form: a pod's token
costs a tenth of a millisecond, where RS256 would cost ten times that.
The claims are those of a bound token: ``iss`` and the default audience
``https://kubernetes.default.svc.cluster.local``, ``sub`` ``system:serviceaccount:NS:NAME``,
``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and the private ``kubernetes.io`` claim naming the
namespace, the service account and, for a pod's token, the pod (name and uid). A pod's token
asked for with the kubelet's 3607 seconds is extended to a year with a ``warnafter`` of 3607 s
(``--service-account-extend-token-expiration``, on by default).

``TokenIssuer.authenticate`` is the token authenticator: a token verifies when its signature is
this cluster's, its issuer and audience are right, it is within ``nbf``..``exp``, and the service
account (and pod, when bound to one) it names still exists with the same uid. Anything else is
``InvalidTokenError`` (the API server answers 401).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from netemu import statedir
from netemu.errors import NetemuError
from netemu.names import new_uid

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)  # kube-apiserver's --api-audiences default: the issuer
SIGNING_KEY = "sa.key"  # in the cluster directory
KUBELET_EXPIRATION = 3607  # the kubelet's projected token (WarnOnlyBoundTokenExpirationSeconds)
EXTENDED_EXPIRATION = 365 * 24 * 3600  # ExpirationExtensionSeconds
DEFAULT_EXPIRATION = 3600  # a TokenRequest without expirationSeconds
MIN_EXPIRATION = 600
MAX_EXPIRATION = 2 ** 32
USER_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"


class InvalidTokenError(NetemuError):
    """A bearer token that is not a valid, current service account token of this cluster."""


@dataclass(frozen=True)
class ServiceAccountUser:
    """Who a verified token says the client is."""
    namespace: str
    name: str
    uid: str
    pod: str = ""

    @property
    def username(self) -> str:
        return f"{USER_PREFIX}{self.namespace}:{self.name}"

    @property
    def groups(self) -> tuple[str, ...]:
        return (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{self.namespace}", "system:authenticated")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expiration: int  # Unix time
    audiences: tuple[str, ...]
    expiration_seconds: int


@dataclass(frozen=True)
class TokenDraft:
    """A token's header and claims (``header.claims``, base64url) before its signature."""

    signing_input: str
    expiration: int
    audiences: tuple[str, ...]
    expiration_seconds: int


def sign(key: ec.EllipticCurvePrivateKey, signing_input: str) -> str:
    """The JWT ``signing_input.signature`` (ES256: r || s, base64url)."""
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(_COORDINATE, 'big') + s.to_bytes(_COORDINATE, 'big'))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidTokenError("malformed token") from exc


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


ALGORITHM = "ES256"
_COORDINATE = 32  # bytes of r and of s in an ES256 signature


def load_or_make_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    """The cluster's signing key from its directory, made (and written 0600) when absent."""
    pem = statedir.read_file(directory, SIGNING_KEY)
    if pem is not None:
        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
    key = ec.generate_private_key(ec.SECP256R1())
    statedir.write_file(directory, SIGNING_KEY, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key


class TokenIssuer:
    """Mints and verifies one cluster's service account tokens against its store."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, store: Any) -> None:
        self._key = key
        self._public = key.public_key()
        self._store = store
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = _b64(hashlib.sha256(der).digest())  # kube-apiserver's keyIDFromPublicKey
        self._header = _b64(_json({"alg": ALGORITHM, "kid": self.key_id}))  # the same in every token

    # ------------------------------------------------------------------ minting

    def key_pem(self) -> bytes:
        """The signing key, PKCS#8 PEM: for the cluster's sandbox helper, which signs pods' tokens."""
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def issue(self, namespace: str, service_account: Any, *, audiences: Sequence[str] = (),
              expiration_seconds: int | None = None, pod: Any = None, now: float | None = None) -> IssuedToken:
        """A token for ``service_account`` (a stored ServiceAccount), bound to ``pod`` if given."""
        draft = self.draft(namespace, service_account, audiences=audiences, expiration_seconds=expiration_seconds,
                           pod=pod, now=now)
        return IssuedToken(sign(self._key, draft.signing_input), draft.expiration, draft.audiences,
                           draft.expiration_seconds)

    def draft(self, namespace: str, service_account: Any, *, audiences: Sequence[str] = (),
              expiration_seconds: int | None = None, pod: Any = None, now: float | None = None) -> TokenDraft:
        """``issue`` but for the signature: what ``sign`` (with this issuer's key) makes a token of."""
        issued_at = int(now if now is not None else time.time())
        asked = expiration_seconds or DEFAULT_EXPIRATION
        audiences = tuple(audiences) or API_AUDIENCES
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account.metadata.name, "uid": service_account.metadata.uid}}
        lifetime = asked
        if pod is not None:
            private["pod"] = {"name": pod.metadata.name, "uid": pod.metadata.uid}
            if asked == KUBELET_EXPIRATION:
                lifetime = EXTENDED_EXPIRATION
                private["warnafter"] = issued_at + asked
        claims = {"iss": ISSUER, "sub": f"{USER_PREFIX}{namespace}:{service_account.metadata.name}",
                  "aud": list(audiences), "iat": issued_at, "nbf": issued_at, "exp": issued_at + lifetime,
                  "jti": new_uid(), "kubernetes.io": private}
        return TokenDraft(f"{self._header}.{_b64(_json(claims))}", issued_at + lifetime, audiences, asked)

    # ------------------------------------------------------------------ verifying

    def claims(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """The claims of a token this cluster signed that is current and meant for its API."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidTokenError("not a JSON web token")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
        except ValueError as exc:
            raise InvalidTokenError("malformed token") from exc
        if not isinstance(header, dict) or header.get("alg") != ALGORITHM or not isinstance(claims, dict):
            raise InvalidTokenError("unexpected signing algorithm")
        raw = _unb64(parts[2])
        if len(raw) != 2 * _COORDINATE:
            raise InvalidTokenError("invalid signature")
        signature = encode_dss_signature(int.from_bytes(raw[:_COORDINATE], "big"),
                                         int.from_bytes(raw[_COORDINATE:], "big"))
        try:
            self._public.verify(signature, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise InvalidTokenError("invalid signature") from exc
        moment = now if now is not None else time.time()
        if claims.get("iss") != ISSUER:
            raise InvalidTokenError("token issuer is not this cluster's")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if not set(audiences) & set(API_AUDIENCES):
            raise InvalidTokenError("token audiences are not the API server's")
        if not isinstance(claims.get("exp"), int) or moment >= claims["exp"]:
            raise InvalidTokenError("token has expired")
        if isinstance(claims.get("nbf"), int) and moment < claims["nbf"]:
            raise InvalidTokenError("token is not valid yet")
        return claims

    def authenticate(self, token: str, *, now: float | None = None) -> ServiceAccountUser:
        """Who the token's holder is; InvalidTokenError when it does not authenticate."""
        private = self.claims(token, now=now).get("kubernetes.io")
        if not isinstance(private, dict):
            raise InvalidTokenError("not a service account token")
        namespace = private.get("namespace", "")
        account = private.get("serviceaccount") or {}
        sa = self._store.get("ServiceAccount", namespace, account.get("name", ""))
        if sa is None or sa.metadata.uid != account.get("uid"):
            raise InvalidTokenError("service account has been deleted")
        pod_ref = private.get("pod")
        if isinstance(pod_ref, dict):
            pod = self._store.get("Pod", namespace, pod_ref.get("name", ""))
            if pod is None or pod.metadata.uid != pod_ref.get("uid"):
                raise InvalidTokenError("pod the token is bound to has been deleted")
        return ServiceAccountUser(namespace, sa.metadata.name, sa.metadata.uid,
                                  pod_ref.get("name", "") if isinstance(pod_ref, dict) else "")


__all__ = ["API_AUDIENCES", "ISSUER", "IssuedToken", "InvalidTokenError", "KUBELET_EXPIRATION", "ServiceAccountUser",
           "TokenIssuer", "load_or_make_key"]
