"""A small synchronous client of the Confluent Schema Registry REST API (Apicurio's `ccompat`
API, Confluent's own, Karapace...): register or look up a schema under a subject, fetch a
schema by id. Standard library only (urllib).

It is called at start (registering every codec's schema, in a thread) and, on the record path,
only when a record names a schema id not seen before (once per id: the answer is cached by the
codec). A URL with `user:password@` sends them as HTTP basic authentication.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(Exception):
    """The registry answered with an error: `status`, its `error_code` and its message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


class RegistryUnavailable(Exception):
    """The registry could not be reached (or did not answer in time)."""


@dataclass(frozen=True)
class RegisteredSchema:
    id: int
    schema_type: str  # AVRO, PROTOBUF or JSON
    schema: str


class RegistryClient:
    def __init__(self, url: str, timeout: float = 10.0, fetch_timeout: float = 3.0) -> None:
        """`timeout`: the calls at start; `fetch_timeout`: `schema(id)`, which the record
        path calls (blocking the worker's event loop) the first time it meets an id."""
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        self.url = urllib.parse.urlunsplit(parts)
        self.timeout, self.fetch_timeout = timeout, fetch_timeout

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r})"

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Accept", CONTENT_TYPE)
        if data is not None:
            request.add_header("Content-Type", CONTENT_TYPE)
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer = json.loads(raw)
                code, message = int(answer.get("error_code", exc.code)), str(answer["message"])
            except (ValueError, KeyError, TypeError, AttributeError):
                code, message = exc.code, raw.decode(errors="replace")[:500] or exc.reason
            raise RegistryError(exc.code, code, message) from None
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnavailable(f"schema registry {self.url} unreachable: {reason}") from None

    @staticmethod
    def _payload(schema: str, schema_type: str) -> dict[str, Any]:
        # Confluent's API leaves schemaType out for Avro, its default
        return {"schema": schema} | ({} if schema_type == "AVRO" else {"schemaType": schema_type})

    @staticmethod
    def _subject(subject: str) -> str:
        return urllib.parse.quote(subject, safe="")

    def register(self, subject: str, schema: str, schema_type: str) -> int:
        """Register the schema under subject (a schema already there keeps its id); the
        registry refuses one its compatibility rule rejects (409)."""
        path = f"/subjects/{self._subject(subject)}/versions"
        return int(self._call("POST", path, self._payload(schema, schema_type))["id"])

    def lookup(self, subject: str, schema: str, schema_type: str) -> int:
        """The id of the schema under subject; RegistryError (404) when it is not there."""
        path = f"/subjects/{self._subject(subject)}"
        return int(self._call("POST", path, self._payload(schema, schema_type))["id"])

    def schema(self, schema_id: int) -> RegisteredSchema:
        answer = self._call("GET", f"/schemas/ids/{int(schema_id)}", timeout=self.fetch_timeout)
        return RegisteredSchema(
            int(schema_id), str(answer.get("schemaType") or "AVRO"), str(answer["schema"])
        )

    def set_compatibility(self, subject: str, level: str) -> None:
        self._call("PUT", f"/config/{self._subject(subject)}", {"compatibility": level})

    def subjects(self) -> list[str]:
        return [str(s) for s in self._call("GET", "/subjects")]
