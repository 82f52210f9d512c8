"""A small blocking client of a netemu cluster's Kubernetes API, for netemu's own CLI.

It trusts only what the cluster left in its verified state directory (``netemu.statedir``): the
server's address from the cluster's kubeconfig, the cluster CA (the server must prove itself with
a certificate that CA signed, for 127.0.0.1) and the bearer token. Answers are JSON; an error
answer's ``Status`` becomes a NetemuError carrying the API server's message, so the CLI prints
what kubectl would print after ``Error from server``.
"""
from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from typing import Any, Iterator

import yaml

from netemu import statedir
from netemu.errors import ClusterError, ConflictError, NetemuError, NotFoundError

from . import CA_CERT, KUBECONFIG, TOKEN

_JSON = "application/json"


class ApiClient:
    """One cluster's API: ``get``/``list``/``create``/``replace``/``delete`` on paths kube-apiserver serves."""

    def __init__(self, host: str, port: int, ca_pem: str, token: str, timeout: float = 60) -> None:
        self.host, self.port = host, port
        self.token = token
        self.timeout = timeout
        self._context = ssl.create_default_context(cadata=ca_pem)

    @classmethod
    def for_cluster(cls, name: str, directory: Any) -> "ApiClient":
        """The client of the running cluster ``name`` whose state is in ``directory``."""
        texts = {what: statedir.read_file(directory, what) for what in (KUBECONFIG, CA_CERT, TOKEN)}
        if any(text is None for text in texts.values()):
            raise ClusterError(f'cluster "{name}" serves no Kubernetes API (started with --no-kube-api?): '
                               "this command needs it")
        config = yaml.safe_load(texts[KUBECONFIG].decode())  # type: ignore[union-attr]
        url = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
        return cls(url.hostname or "127.0.0.1", url.port or 443, texts[CA_CERT].decode(),  # type: ignore[union-attr]
                   texts[TOKEN].decode().strip())  # type: ignore[union-attr]

    def _open(self, method: str, path: str, body: Any, query: dict[str, str] | None, content_type: str,
              timeout: float | None) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": _JSON, "User-Agent": "netemu"}
        if data is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ClusterError(f"cannot reach the cluster's API at https://{self.host}:{self.port}: {exc}") from exc
        if response.status >= 400:
            try:
                payload = response.read()
            finally:
                conn.close()
            _raise_status(response, payload)
        return conn, response

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
                content_type: str = _JSON) -> Any:
        """The decoded JSON answer; NotFoundError (404), ConflictError (409) or NetemuError with the
        Status message for any other error."""
        conn, response = self._open(method, path, body, query, content_type, self.timeout)
        try:
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ClusterError(f"the cluster's API stopped answering: {exc}") from exc
        finally:
            conn.close()
        return json.loads(payload) if payload else None

    def stream(self, method: str, path: str, *, query: dict[str, str] | None = None) -> Iterator[bytes]:
        """The answer's body as it arrives (a followed log), without a time limit; ends with it."""
        conn, response = self._open(method, path, None, query, _JSON, None)
        try:
            while chunk := response.read1(1 << 16):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise ClusterError(f"the cluster's API stopped answering: {exc}") from exc
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def list(self, path: str, **query: str) -> list[Any]:
        return list(self.request("GET", path, query=query or None).get("items") or [])

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def replace(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _raise_status(response: http.client.HTTPResponse, payload: bytes) -> None:
    """NotFoundError (404), ConflictError (409) or NetemuError with the Status message."""
    try:
        answer = json.loads(payload) if payload else None
    except ValueError:
        answer = None
    message = answer.get("message") if isinstance(answer, dict) else None
    message = message or f"the server answered {response.status} {response.reason}"
    raise {404: NotFoundError, 409: ConflictError}.get(response.status, NetemuError)(message)
