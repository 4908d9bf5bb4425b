"""Connection security: TLS and SASL settings checked at start and turned into aiokafka options.

`check_security` runs when `Settings` are built (a wrong combination is a ConfigError that
names the setting to change); `kafka_security_options` gives the keyword arguments every
aiokafka client is built with (`streamkit.clients`); `explain_unreachable` turns a failed
bootstrap into one sentence (bad password, untrusted certificate, wrong listener). Secrets
(`sasl_password`, `ssl_password`) stay `SecretStr` until they are handed to aiokafka, and no
message here ever contains them.
"""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from streamkit.aiokafka_internals import probe_connection

if TYPE_CHECKING:
    from pydantic import SecretStr

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
MECHANISMS = "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
PROBE_TIMEOUT = 10.0


class Settings(Protocol):
    """The connection settings this module reads (`streamkit.settings.Settings`, which checks
    them with `check_security` when it is built: so this module does not import it)."""

    @property
    def security_protocol(self) -> str: ...
    @property
    def sasl_mechanism(self) -> str | None: ...
    @property
    def sasl_username(self) -> str | None: ...
    @property
    def sasl_password(self) -> SecretStr | None: ...
    @property
    def ssl_cafile(self) -> Path | None: ...
    @property
    def ssl_certfile(self) -> Path | None: ...
    @property
    def ssl_keyfile(self) -> Path | None: ...
    @property
    def ssl_password(self) -> SecretStr | None: ...
    @property
    def ssl_check_hostname(self) -> bool: ...


def _env(name: str) -> str:
    return f"{name} (STREAMKIT_{name.upper()})"


def check_security(settings: Settings) -> str | None:
    """What is wrong with the security settings, as an instruction; None when they fit."""
    protocol = settings.security_protocol
    sasl_given = [
        name
        for name in ("sasl_mechanism", "sasl_username", "sasl_password")
        if getattr(settings, name) is not None
    ]
    if protocol in SASL_PROTOCOLS:
        if settings.sasl_mechanism is None:
            return (
                f"security_protocol {protocol} needs a SASL mechanism: set "
                f"{_env('sasl_mechanism')} to {MECHANISMS}"
            )
        for name in ("sasl_username", "sasl_password"):
            if getattr(settings, name) is None:
                return f"sasl_mechanism {settings.sasl_mechanism} needs {name}: set {_env(name)}"
    elif sasl_given:
        return (
            f"{', '.join(sasl_given)} given but security_protocol is {protocol}, which does "
            f"not use SASL: set {_env('security_protocol')} to SASL_SSL or SASL_PLAINTEXT, "
            f"or unset {', '.join(sasl_given)}"
        )
    ssl_given = [
        name
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
        if getattr(settings, name) is not None
    ]
    if protocol not in TLS_PROTOCOLS:
        if ssl_given:
            return (
                f"{', '.join(ssl_given)} given but security_protocol is {protocol}, which does "
                f"not use TLS: set {_env('security_protocol')} to SSL or SASL_SSL, "
                f"or unset {', '.join(ssl_given)}"
            )
        return None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            return f"{name} {str(path)!r} is not a readable file: set {_env(name)} to a PEM file"
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        return f"ssl_keyfile is given without its certificate: set {_env('ssl_certfile')}"
    if settings.ssl_password is not None and settings.ssl_certfile is None:
        return f"ssl_password is given but no client key: set {_env('ssl_certfile')}"
    try:
        ssl_context(settings)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return _describe_ssl_error(settings, exc)
    return None


def _describe_ssl_error(settings: Settings, exc: BaseException) -> str:
    # The texts come from OpenSSL (e.g. "[SSL] PEM lib", "bad decrypt"); they carry no secret.
    text = f"{type(exc).__name__}: {exc}"
    if settings.ssl_certfile is not None:
        return (
            f"cannot load the client certificate/key ({text}): check ssl_certfile, "
            "ssl_keyfile and ssl_password (STREAMKIT_SSL_PASSWORD for an encrypted key)"
        )
    return f"cannot load ssl_cafile {str(settings.ssl_cafile)!r} ({text}): give a PEM CA file"


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every client (None without TLS); built once per distinct setting."""
    if settings.security_protocol not in TLS_PROTOCOLS:
        return None
    password = settings.ssl_password
    return _cached_context(
        settings.ssl_cafile,
        settings.ssl_certfile,
        settings.ssl_keyfile,
        None if password is None else password.get_secret_value(),
        settings.ssl_check_hostname,
    )


@functools.lru_cache(maxsize=8)
def _cached_context(
    cafile: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    context: ssl.SSLContext = create_ssl_context(
        cafile=cafile, certfile=certfile, keyfile=keyfile, password=password
    )
    context.check_hostname = check_hostname
    if not check_hostname:  # still verify the chain: a cert any CA signed is not enough
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def describe_security(settings: Settings) -> str:
    """How the clients connect, for logs and status pages: never a secret."""
    text: str = settings.security_protocol
    if settings.security_protocol in SASL_PROTOCOLS:
        text += f", {settings.sasl_mechanism} as {settings.sasl_username!r}"
    if settings.ssl_certfile is not None:
        text += ", client certificate"
    return text


def kafka_security_options(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments of an aiokafka client (consumer, producer, admin,
    AIOKafkaClient): empty for PLAINTEXT."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        redact_sasl_payloads()
        password = settings.sasl_password
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = None if password is None else password.get_secret_value()
    return options


class _RedactSaslPayloads(logging.Filter):
    """aiokafka logs every request at DEBUG, the SASL ones too: a PLAIN SaslAuthenticate
    request carries `user\\0user\\0password`. This filter puts a placeholder in their place."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_sasl_payload(a) for a in args):
            record.args = tuple(
                f"{type(a).__name__}(<redacted>)" if _is_sasl_payload(a) else a for a in args
            )
        return True


def _is_sasl_payload(arg: object) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticate")


_REDACTION = _RedactSaslPayloads()


def redact_sasl_payloads() -> None:
    """Install the filter on aiokafka's connection logger (once; it is cheap for others)."""
    logger = logging.getLogger("aiokafka.conn")
    if _REDACTION not in logger.filters:
        logger.addFilter(_REDACTION)


async def explain_unreachable(settings: Settings, server: str) -> str:
    """Why no connection to `server` (host:port) could be made, with what to change.

    aiokafka's bootstrap error only says that it failed; one direct connection attempt with
    the same options shows the cause (refused, TLS handshake, SASL authentication)."""
    host, _, port = server.rpartition(":")
    options = kafka_security_options(settings)
    try:
        await probe_connection(host, int(port), options, PROBE_TIMEOUT)
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the broker's TLS certificate was not accepted ({exc.verify_message}): set "
            f"{_env('ssl_cafile')} to the CA that signed it"
            + (", or ssl_check_hostname=false" if "hostname" in str(exc).lower() else "")
        )
    except ssl.SSLError as exc:
        return (
            f"TLS handshake failed ({exc.reason or exc}): is {server} a TLS listener? "
            f"Check {_env('security_protocol')} and the client certificate settings"
        )
    except (KafkaError, ValueError) as exc:
        name = type(exc).__name__
        if "Mechanism" in name:
            return (
                f"the listener at {server} does not offer {settings.sasl_mechanism} ({exc}): "
                f"set {_env('sasl_mechanism')} to one it offers"
            )
        if "Authentication" in name or "Sasl" in name or isinstance(exc, ValueError):
            return (
                f"SASL authentication as {settings.sasl_username!r} failed ({name}: {exc}): "
                f"check {_env('sasl_username')}, {_env('sasl_password')} and "
                f"{_env('sasl_mechanism')}"
            )
        hint = ""
        if settings.security_protocol in TLS_PROTOCOLS and settings.ssl_certfile is None:
            hint = (
                " (a listener that requires client certificates closes the connection: set "
                f"{_env('ssl_certfile')} and {_env('ssl_keyfile')})"
            )
        return (
            f"{name}: {exc}; check that {_env('security_protocol')} "
            f"({settings.security_protocol}) is what the listener at {server} speaks{hint}"
        )
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    else:
        return "the first connection worked, but the cluster metadata did not come back"
