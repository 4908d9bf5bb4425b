"""Every bad setting, declaration and command line fails at start with a message that names
what to change. Tables: (input, the words the message must contain). No broker is reached:
each of these fails before any connection."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.settings import ConfigError, load_settings
from tests.kafkahelp import ROOT

SECRET = "hunter2-do-not-print"


@pytest.fixture(autouse=True)
def _no_streamkit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("STREAMKIT_") and name != "STREAMKIT_KAFKA_CACHE":
            monkeypatch.delenv(name)


SASL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}

# (keyword settings, words the message must contain)
BAD_SETTINGS: list[tuple[dict[str, Any], list[str]]] = [
    ({"broker": "localhost"}, ["broker", "host:port", "STREAMKIT_BROKER"]),
    ({"broker": ""}, ["broker", "at least one host:port"]),
    ({"broker": "kafka://"}, ["broker", "at least one host:port"]),
    ({"broker": ":9092"}, ["broker", "not host:port"]),
    ({"broker": "a:b"}, ["broker", "not host:port"]),
    ({"broker": "host:99999"}, ["broker", "port 1-65535"]),
    ({"broker": "h:1,,h2"}, ["'h2' is not host:port"]),
    ({"broker": 5}, ["broker", "valid string"]),
    ({"processing_guarantee": "exactly-once"}, ["processing_guarantee", "'exactly_once'"]),
    ({"processing_guarantee": "eos"}, ["STREAMKIT_PROCESSING_GUARANTEE", "'at_least_once'"]),
    ({"transaction_timeout_ms": 10}, ["transaction_timeout_ms", "greater than or equal to 1000"]),
    ({"transaction_timeout_ms": "1m"}, ["transaction_timeout_ms", "valid integer"]),
    ({"commit_interval": 0}, ["commit_interval", "greater than 0"]),
    ({"commit_interval": -1}, ["commit_interval", "greater than 0"]),
    ({"commit_interval": "fast"}, ["commit_interval", "valid number"]),
    ({"commit_interval": 10**9}, ["commit_interval", "less than or equal to 3600"]),
    ({"workdir": 5}, ["workdir", "STREAMKIT_WORKDIR"]),
    ({"workdir": Path("/etc/hostname")}, ["workdir", "is a file, not a directory"]),
    ({"on_agent_error": "ignore"}, ["on_agent_error", "'dlq' or 'stop'"]),
    ({"auto_offset_reset": "beginning"}, ["auto_offset_reset", "'earliest' or 'latest'"]),
    ({"max_poll_records": 0}, ["max_poll_records", "greater than or equal to 1"]),
    ({"max_poll_records": 10**7}, ["max_poll_records", "less than or equal to 1000000"]),
    (
        {"max_buffered_per_partition": 0},
        ["max_buffered_per_partition", "greater than or equal to 1"],
    ),
    ({"idle_timeout": 0}, ["idle_timeout", "greater than 0"]),
    ({"session_timeout_ms": 10}, ["session_timeout_ms", "greater than or equal to 1000"]),
    ({"heartbeat_interval_ms": 1}, ["heartbeat_interval_ms", "greater than or equal to 100"]),
    ({"heartbeat_interval_ms": 20_000}, ["heartbeat_interval_ms (20000) must be below"]),
    (
        {"session_timeout_ms": 6000, "heartbeat_interval_ms": 6000},
        ["session_timeout_ms (6000)", "lower STREAMKIT_HEARTBEAT_INTERVAL_MS"],
    ),
    ({"max_poll_interval_ms": 5}, ["max_poll_interval_ms", "greater than or equal to 1000"]),
    ({"linger_ms": -1}, ["linger_ms", "greater than or equal to 0"]),
    ({"linger_ms": "soon"}, ["linger_ms", "valid integer"]),
    ({"max_batch_size": 10}, ["max_batch_size", "greater than or equal to 1024"]),
    ({"state_cache_entries": 1}, ["state_cache_entries", "greater than or equal to 100"]),
    ({"standby_replicas": -1}, ["standby_replicas", "greater than or equal to 0"]),
    ({"standby_replicas": 11}, ["standby_replicas", "less than or equal to 10"]),
    ({"topic_replication_factor": 0}, ["topic_replication_factor", "greater than or equal to 1"]),
    ({"shutdown_timeout": 0}, ["shutdown_timeout", "greater than 0"]),
    ({"log_level": "verbose"}, ["log_level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"]),
    ({"nonsense": 1}, ["unknown setting nonsense", "commit_interval"]),
    ({"comit_interval": 1}, ["unknown setting comit_interval (did you mean commit_interval?)"]),
    # security
    ({"security_protocol": "TLS"}, ["security_protocol", "'SSL'", "'SASL_SSL'"]),
    ({"security_protocol": "SASL_SSL"}, ["needs a SASL mechanism", "STREAMKIT_SASL_MECHANISM"]),
    (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"},
        ["sasl_mechanism", "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"],
    ),
    (
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512"},
        ["SCRAM-SHA-512 needs sasl_username", "STREAMKIT_SASL_USERNAME"],
    ),
    (SASL, ["PLAIN needs sasl_password", "STREAMKIT_SASL_PASSWORD"]),
    ({"sasl_username": "u"}, ["security_protocol is PLAINTEXT", "SASL_SSL or SASL_PLAINTEXT"]),
    ({"sasl_password": SECRET}, ["sasl_password given", "STREAMKIT_SECURITY_PROTOCOL"]),
    ({"sasl_password": 5}, ["sasl_password = '**********'", "valid string"]),
    ({"ssl_cafile": "/etc/hostname"}, ["ssl_cafile given", "to SSL or SASL_SSL"]),
    (
        {"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"},
        ["ssl_cafile '/no/such/ca.pem' is not a readable file", "STREAMKIT_SSL_CAFILE"],
    ),
    (
        {"security_protocol": "SSL", "ssl_cafile": "/etc/hostname"},
        ["cannot load ssl_cafile '/etc/hostname'", "give a PEM CA file"],
    ),
    (
        {"security_protocol": "SSL", "ssl_keyfile": "/etc/hostname"},
        ["ssl_keyfile is given without its certificate", "STREAMKIT_SSL_CERTFILE"],
    ),
    (
        {"security_protocol": "SSL", "ssl_password": SECRET},
        ["ssl_password is given but no client key", "STREAMKIT_SSL_CERTFILE"],
    ),
    (
        {"security_protocol": "SSL", "ssl_certfile": "/etc/hostname"},
        ["cannot load the client certificate/key", "ssl_certfile"],
    ),
    ({"ssl_check_hostname": "maybe"}, ["ssl_check_hostname", "valid boolean"]),
    (
        {**SASL, "sasl_password": SECRET, "ssl_cafile": "/no/such/ca.pem"},
        ["ssl_cafile '/no/such/ca.pem' is not a readable file"],
    ),
]


@pytest.mark.parametrize(("given", "words"), BAD_SETTINGS, ids=lambda v: str(v)[:60])
def test_bad_setting_names_what_to_change(given: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**given)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert SECRET not in message
    assert "Value error," not in message and "\n" not in message


# (environment, words): the same settings from STREAMKIT_* variables
BAD_ENV: list[tuple[dict[str, str], list[str]]] = [
    (
        {"STREAMKIT_COMMITINTERVAL": "1"},
        ["unknown setting STREAMKIT_COMMITINTERVAL", "did you mean STREAMKIT_COMMIT_INTERVAL?"],
    ),
    ({"STREAMKIT_BROKERS": "h:1"}, ["unknown setting STREAMKIT_BROKERS", "STREAMKIT_BROKER"]),
    ({"STREAMKIT_PASSWORD": SECRET}, ["unknown setting STREAMKIT_PASSWORD"]),
    ({"STREAMKIT_LINGER_MS": "soon"}, ["bad setting linger_ms = 'soon'", "STREAMKIT_LINGER_MS"]),
    ({"STREAMKIT_STANDBY_REPLICAS": ""}, ["standby_replicas", "valid integer"]),
    ({"STREAMKIT_SSL_CHECK_HOSTNAME": "perhaps"}, ["ssl_check_hostname", "valid boolean"]),
    ({"STREAMKIT_PROCESSING_GUARANTEE": "exactly_twice"}, ["processing_guarantee"]),
    ({"STREAMKIT_BROKER": "kafka:/x"}, ["broker", "host:port"]),
    ({"STREAMKIT_INSTANCE_ID": "shop 0"}, ["instance_id = 'shop 0'", "STREAMKIT_INSTANCE_ID"]),
    (
        {
            "STREAMKIT_SECURITY_PROTOCOL": "sasl_plaintext",
            "STREAMKIT_SASL_MECHANISM": "plain",
            "STREAMKIT_SASL_USERNAME": "u",
        },
        ["PLAIN needs sasl_password"],
    ),
    (
        {"STREAMKIT_SASL_PASSWORD": SECRET, "STREAMKIT_COMMIT_INTERVAL": "x"},
        ["bad setting commit_interval = 'x'"],  # checks across settings wait for valid fields
    ),
]


@pytest.mark.parametrize(("env", "words"), BAD_ENV, ids=lambda v: str(v)[:60])
def test_bad_environment_names_what_to_change(
    env: dict[str, str], words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert SECRET not in message


def test_settings_never_show_secrets() -> None:
    settings = load_settings(**SASL, sasl_password=SECRET)
    for shown in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
    ):
        assert SECRET not in shown
        assert "**********" in shown


def _app(uid: str = "a") -> sk.App:
    return sk.App(f"bad-{uid}")


async def _agent(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
    async for value in stream:
        yield value


def _declare_two_agents() -> None:
    app = _app()
    topic, out = app.topic("t"), app.topic("out")
    app.agent(topic, name="same", sink=out)(_agent)
    app.agent(app.topic("u"), name="same", sink=out)(_agent)


def _agent_on_undeclared_topic() -> None:
    app, other = _app(), _app("other")
    app.agent(other.topic("elsewhere"))(_agent)


def _key_by_zero_partitions() -> None:
    app = _app()

    app.stream(app.topic("t")).key_by("user", partitions=0)


# (a declaration, words its ConfigError must contain)
BAD_DECLARATIONS: list[tuple[Callable[[], Any], list[str]]] = [
    (lambda: sk.App("bad id!"), ["app id 'bad id!' is not valid", "letters, digits"]),
    (lambda: sk.App(""), ["app id '' is not valid"]),
    (lambda: _app().topic("a topic"), ["'a topic' is not a legal Kafka topic name"]),
    (lambda: _app().topic("x" * 250), ["not a legal Kafka topic name", "at most 249"]),
    (lambda: _app().topic(".."), ["'..' is not a legal Kafka topic name"]),
    (lambda: _app().topic("t", partitions=0), ["topic t: partitions must be", ">= 1, got 0"]),
    (lambda: _app().topic("t", partitions="4"), ["topic t: partitions must be", "got '4'"]),  # type: ignore[arg-type]
    (lambda: _app().topic("t", timestamp_unit="min"), ["timestamp_unit must be 's' or 'ms'"]),
    (lambda: _app().topic("t", out_of_orderness=-1), ["out_of_orderness must be a non-negative"]),
    (lambda: _app().topic("t", out_of_orderness="5"), ["out_of_orderness", "got '5'"]),  # type: ignore[arg-type]
    (lambda: _app().topic("t", timestamp=5), ["timestamp must be a field name, a function"]),  # type: ignore[arg-type]
    (
        lambda: (lambda a: (a.topic("t", partitions=2), a.topic("t", partitions=3)))(_app()),
        ["topic t is declared twice with different settings"],
    ),
    (lambda: sk.tumbling(0), ["the window size must be a positive number of seconds, got 0"]),
    (lambda: sk.tumbling(float("nan")), ["the window size must be a positive number"]),
    (lambda: sk.tumbling("60"), ["the window size must be a positive number", "got '60'"]),  # type: ignore[arg-type]
    (lambda: sk.hopping(60, every=0), ["the hop must be a positive number of seconds"]),
    (lambda: sk.hopping(60, every=7), ["must be a multiple of the hop (7s)"]),
    (lambda: sk.sliding(-5), ["the window size must be a positive number", "got -5"]),
    (lambda: sk.session(0), ["the session gap must be a positive number"]),
    (
        lambda: _app().window("w", sk.tumbling(60), sk.count(), emit="sometimes"),
        ["window w: emit must be 'final' or 'update', got 'sometimes'"],
    ),
    (
        lambda: _app().window("w", sk.tumbling(60), sk.count(), allowed_lateness=-1),
        ["window w: allowed_lateness must be a non-negative number of seconds"],
    ),
    (
        lambda: _app().window("w", sk.tumbling(60), sk.count(), allowed_lateness="10"),  # type: ignore[arg-type]
        ["allowed_lateness", "got '10'"],
    ),
    (
        lambda: (lambda a: (a.table("t"), a.table("t")))(_app()),
        ["two tables are named 't'"],
    ),
    (_declare_two_agents, ["two agents are named 'same'", "pass name="]),
    (_agent_on_undeclared_topic, ["topic elsewhere was not declared with app.topic()"]),
    (_key_by_zero_partitions, ["partitions must be", "got 0"]),
]


@pytest.mark.parametrize(("declare", "words"), BAD_DECLARATIONS, ids=lambda v: str(v)[:50])
def test_bad_declaration_names_what_to_change(declare: Callable[[], Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        declare()
    message = str(caught.value)
    for word in words:
        assert word in message, message


# -- the command line: real processes, one line, a non-zero exit ----------------------------

MODULES = {
    "needs_pkg.py": "import streamkit\nimport no_such_package_xyz\n",
    "bad_id.py": "import streamkit as sk\napp = sk.App('bad id!')\n",
    "bad_window.py": "import streamkit as sk\napp = sk.App('w')\nw = sk.tumbling(0)\n",
    "bad_topic.py": "import streamkit as sk\napp = sk.App('t')\nt = app.topic('t', partitions=0)\n",
    "no_agents.py": "import streamkit as sk\napp = sk.App('quiet')\n",
}

# (arguments, environment, words the one error line must contain)
BAD_COMMANDS: list[tuple[list[str], dict[str, str], list[str]]] = [
    (["worker", "bad_id"], {}, ["'bad_id' is not MODULE:APP", "apps.shop:app"]),
    (["worker", ":app"], {}, ["is not MODULE:APP"]),
    (["worker", "apps/hello.py:app"], {}, ["is a file path", "apps.hello:app"]),
    (["worker", "no_such_module:app"], {}, ["cannot import module 'no_such_module'", "PYTHONPATH"]),
    (["worker", "needs_pkg:app"], {}, ["imports 'no_such_package_xyz', which is not installed"]),
    (["worker", "no_agents:nope"], {}, ["module no_agents has no attribute 'nope'"]),
    (["worker", "no_agents:sk"], {}, ["no_agents:sk is a module, not a streamkit.App"]),
    (["worker", "bad_id:app"], {}, ["app id 'bad id!' is not valid"]),
    (["worker", "bad_window:app"], {}, ["the window size must be a positive number"]),
    (["worker", "bad_topic:app"], {}, ["topic t: partitions must be"]),
    (["worker", "no_agents:app"], {}, ["app quiet has no agents", "@app.agent"]),
    (
        ["worker", "no_agents:app", "--commit-interval", "0"],
        {},
        ["commit_interval", "greater than 0"],
    ),
    (["worker", "no_agents:app", "--log-level", "loud"], {}, ["log_level", "'DEBUG'"]),
    (["worker", "no_agents:app", "--max-poll-records", "-5"], {}, ["max_poll_records"]),
    (
        ["worker", "no_agents:app", "--workdir", "/etc/hostname"],
        {},
        ["workdir = '/etc/hostname'", "is a file"],
    ),
    (
        ["worker", "no_agents:app"],
        {"STREAMKIT_SASL_USERNAME": "u", "STREAMKIT_SASL_PASSWORD": SECRET},
        ["security_protocol is PLAINTEXT", "STREAMKIT_SECURITY_PROTOCOL"],
    ),
    (["worker", "no_agents:app"], {"STREAMKIT_COMIT_INTERVAL": "1"}, ["did you mean"]),
    (
        ["topology", "no_agents:app", "--format", "dot"],
        {},
        ["--format 'dot': use text, mermaid or json"],
    ),
    (["tables", "get", "no_agents:app"], {}, ["usage: streamkit tables get MODULE:APP TABLE KEY"]),
    (["windows", "get", "no_agents:app"], {}, ["usage: streamkit windows get MODULE:APP NAME"]),
    (
        ["windows", "get", "no_agents:app", "nope", "k"],
        {},
        ["has no window table or timer set 'nope'"],
    ),
]

# typer's own checks (a missing argument, an option of the wrong type): a short usage box
TYPER_COMMANDS: list[tuple[list[str], list[str]]] = [
    (["worker"], ["Missing argument 'app'"]),
    (["worker", "no_agents:app", "--commit-interval", "abc"], ["'--commit-interval'", "number"]),
    (["worker", "no_agents:app", "--bogus", "1"], ["No such option: --bogus"]),
    (["send", "no_agents:app", "t", "--partition", "x"], ["'--partition'", "integer"]),
    (["frobnicate"], ["No such command 'frobnicate'"]),
]


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, *, broker: str = "127.0.0.1:1", stdin: str = ""
) -> tuple[int, str]:
    for name, text in MODULES.items():
        (cwd / name).write_text(text)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    environment["PYTHONPATH"] = str(ROOT)  # apps.hello, and streamkit itself
    proc = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", *args],
        capture_output=True,
        cwd=cwd,
        env={**environment, **env, "KAFKA_BOOTSTRAP_SERVERS": broker},
        timeout=60,
        input=stdin.encode(),
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode()


@pytest.mark.parametrize(("args", "env", "words"), BAD_COMMANDS, ids=lambda v: str(v)[:50])
def test_bad_command_fails_with_one_line(
    args: list[str], env: dict[str, str], words: list[str], tmp_path: Path
) -> None:
    code, output = run_cli(args, env, tmp_path)
    assert code != 0, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for word in words:
        assert word in output, output
    assert SECRET not in output


@pytest.mark.parametrize(("args", "words"), TYPER_COMMANDS, ids=lambda v: str(v)[:50])
def test_bad_arguments_get_a_usage_message(
    args: list[str], words: list[str], tmp_path: Path
) -> None:
    code, output = run_cli(args, {}, tmp_path)
    assert code == 2, output
    assert "Traceback" not in output
    text = " ".join(output.replace("│", " ").split())  # the box wraps long lines
    for word in words:
        assert word in text, output


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (
            ["--partition", "9"],
            '{"id": 1, "amount": 2}',
            ["--partition 9: orders has partitions 0 to 3"],
        ),
        (
            [],
            '{"id": 1, "pad": "' + "x" * 1_200_000 + '"}',
            ["record 1 is 1200020 bytes", "1 MB limit"],
        ),
        (["--key-field", "user"], '{"id": 1}', ["--key-field user: missing in {'id': 1}"]),
    ],
    ids=["partition", "too-big", "key-field"],
)
def test_bad_send_fails_with_one_line(
    args: list[str], stdin: str, words: list[str], kafka: str, tmp_path: Path
) -> None:
    code, output = run_cli(
        ["send", "apps.hello:app", "orders", *args], {}, tmp_path, broker=kafka, stdin=stdin
    )
    assert code == 2, output
    assert output.startswith("error: ") and len(output.strip().splitlines()) == 1, output
    for word in words:
        assert word in output, output


def test_the_tools_variables_are_not_taken_for_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The local broker's variables (its jar cache, data folder and state file) may be set
    in the shell that starts a worker: a worker ignores them rather than refusing to start."""
    for name in ("STREAMKIT_KAFKA_CACHE", "STREAMKIT_KAFKA_DATA", "STREAMKIT_KAFKA_STATE"):
        monkeypatch.setenv(name, str(tmp_path))
    assert load_settings(commit_interval=2).commit_interval == 2
    monkeypatch.setenv("STREAMKIT_KAFKA_DATAS", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown setting STREAMKIT_KAFKA_DATAS"):
        load_settings()
