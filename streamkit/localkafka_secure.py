"""The secure listeners of a local broker (`localkafka.py up --secure`; tests:
`start_broker(secure=True)`): SASL_PLAINTEXT and SASL_SSL (PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512 for one user whose random password is made at format time) and SSL with client
certificates required. openssl makes a CA, a broker certificate for 127.0.0.1 (a PEM keystore)
and a client certificate whose key is encrypted; <data dir>/security.json lists the ports, the
user, the passwords and the files. Standard library only, like localkafka.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any


class SecurityError(RuntimeError):
    """Making the certificates failed; the message says why."""


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SECURE_LISTENERS = ("SASL_PLAINTEXT", "SASL_SSL", "SSL")
SASL_USER = "alice"

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SecurityError("openssl is needed to make the certificates of a --secure broker")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SecurityError(f"openssl {args[0]} failed:\n{result.stderr}")


def make_certificates(tls_dir: Path, client_key_password: str) -> dict[str, str]:
    """A CA, a broker keystore (PEM: key + certificate chain) for 127.0.0.1/localhost and a
    client certificate with an encrypted key; valid for two days."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    (tls_dir / "openssl.cnf").write_text(_OPENSSL_CONFIG)
    conf = ("-config", "openssl.cnf")
    ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    _openssl("genpkey", *ec, "-out", "ca.key", cwd=tls_dir)
    _openssl("req", "-new", "-x509", "-key", "ca.key", "-subj", "/CN=streamkit-test-ca",
             "-days", "2", *conf, "-extensions", "ca", "-out", "ca.pem", cwd=tls_dir)  # fmt: skip
    for name, ext, extra in (
        ("broker", "server", ()),
        ("client", "client", ("-aes-256-cbc", "-pass", f"pass:{client_key_password}")),
    ):
        _openssl("genpkey", *ec, *extra, "-out", f"{name}.key", cwd=tls_dir)
        passin = ("-passin", f"pass:{client_key_password}") if extra else ()
        _openssl("req", "-new", "-key", f"{name}.key", *passin, "-subj", f"/CN={name}", *conf,
                 "-out", f"{name}.csr", cwd=tls_dir)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "openssl.cnf", "-extensions", ext,
                 "-out", f"{name}.pem", cwd=tls_dir)  # fmt: skip
    keystore = tls_dir / "broker-keystore.pem"
    keystore.write_text("".join((tls_dir / f).read_text() for f in ("broker.key", "broker.pem")))
    return {
        "cafile": str(tls_dir / "ca.pem"),
        "keystore": str(keystore),
        "client_certfile": str(tls_dir / "client.pem"),
        "client_keyfile": str(tls_dir / "client.key"),
    }


def secure_listener_config(
    props: dict[str, str], security: dict[str, Any], host: str
) -> dict[str, str]:
    """The broker properties that add the SASL_PLAINTEXT, SASL_SSL and SSL listeners on host."""
    ports: dict[str, int] = security["listeners"]
    names = [*SECURE_LISTENERS]
    extra = ",".join(f"{name}://{host}:{ports[name]}" for name in names)
    user, password = security["username"], security["password"]
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{user}="{password}";'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    out = {
        "listeners": f"{props['listeners']},{extra}",
        "advertised.listeners": f"{props['advertised.listeners']},{extra}",
        "listener.security.protocol.map": props["listener.security.protocol.map"]
        + "".join(f",{name}:{name}" for name in names),
        "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": security["keystore"],
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": security["cafile"],
        "listener.name.ssl.ssl.client.auth": "required",
    }
    for listener in ("sasl_plaintext", "sasl_ssl"):
        out[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain
        for mechanism in SCRAM_MECHANISMS:
            out[f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"] = scram
    return out


def new_security(data_dir: Path, ports: list[int]) -> dict[str, Any]:
    """Ports, a user with a random password, certificates: <data_dir>/security.json."""
    key_password = secrets.token_urlsafe(12)
    security: dict[str, Any] = {
        "listeners": dict(zip(SECURE_LISTENERS, ports, strict=True)),
        "username": SASL_USER,
        "password": secrets.token_urlsafe(18),
        "client_key_password": key_password,
        **make_certificates(data_dir / "tls", key_password),
    }
    (data_dir / "security.json").write_text(json.dumps(security, indent=2) + "\n")
    return security
