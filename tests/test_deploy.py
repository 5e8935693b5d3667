"""deploy/: every `overlay ...` command line in the systemd unit, the
Dockerfile (ENTRYPOINT + CMD, HEALTHCHECK) and the Kubernetes manifests is a
valid invocation of our own parser, and an agent's flags build its settings
(seeds, addresses, key file, config file). The files are read with a few
lines of parsing (no YAML library): the manifests keep to block lists under
`args:` and one-line JSON lists under `command:`."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli import _agent_settings, build_parser
from daemon.control import parse_control
from daemon.discovery import parse_seed
from daemon.security import generate_key

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "overlay.service"
DOCKERFILE = DEPLOY / "Dockerfile"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))

# What systemd puts for the specifiers used, and Kubernetes for $(VAR).
SYSTEMD_SPECIFIERS = {"%d": "/run/credentials/overlay.service", "%%": "%"}
POD_ENV = {"POD_NAME": "overlay-0", "POD_IP": "10.1.2.3", "POD_NAMESPACE": "default"}
# Files the commands name, as this checkout holds them.
FILES = {"/etc/overlay/agent.toml": DEPLOY / "systemd" / "agent.toml"}


# ------------------------------------------------------------- extraction


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined, comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def unit_commands(text: str) -> list[list[str]]:
    out = []
    for line in _logical_lines(text):
        m = re.match(r"\s*Exec\w+=([-@:+!]*)(.*)", line)
        if m is None:
            continue
        command = m.group(2)
        for spec, value in SYSTEMD_SPECIFIERS.items():
            command = command.replace(spec, value)
        argv = shlex.split(command)
        if Path(argv[0]).name == "overlay":
            out.append(["overlay", *argv[1:]])
    return out


def dockerfile_instructions(text: str) -> dict[str, list[str]]:
    """ENTRYPOINT, CMD and the HEALTHCHECK's CMD, each an exec-form list."""
    found: dict[str, list[str]] = {}
    for line in _logical_lines(text):
        m = re.match(r"(ENTRYPOINT|CMD|HEALTHCHECK)\s+(.*)", line.strip())
        if m is None:
            continue
        key, rest = m.groups()
        if key == "HEALTHCHECK":
            rest = rest[rest.index(" CMD ") + len(" CMD ") :]
        found[key] = json.loads(rest)  # exec form only: a shell form fails here
    return found


def dockerfile_commands(text: str) -> list[list[str]]:
    d = dockerfile_instructions(text)
    return [d["ENTRYPOINT"] + d.get("CMD", []), d["HEALTHCHECK"]]


def _yaml_scalar(text: str) -> str:
    text = text.split(" #", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def manifest_lists(text: str) -> list[tuple[str, str, list[str]]]:
    """Each `args:` and `command:` list as (key, the key before it, items)."""
    lines = text.splitlines()
    out = []
    previous_key = ""
    for i, line in enumerate(lines):
        m = re.match(r"(\s*)(?:- )?(\w+):\s*(.*)$", line)
        if m is None:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        if key in ("args", "command"):
            if rest:
                items = [str(x) for x in json.loads(rest)]
            else:
                items = []
                for item in lines[i + 1 :]:
                    im = re.match(r"(\s*)- (.*)$", item)
                    if im is None or len(im.group(1)) < indent:
                        break
                    items.append(_yaml_scalar(im.group(2)))
            out.append((key, previous_key, items))
        previous_key = key
    return out


def manifest_commands(text: str, entrypoint: list[str]) -> list[list[str]]:
    out = []
    for key, before, items in manifest_lists(text):
        items = [re.sub(r"\$\((\w+)\)", lambda m: POD_ENV[m.group(1)], x) for x in items]
        if key == "args":  # a container's: after the image's ENTRYPOINT
            out.append(entrypoint + items)
        else:
            # Only probes run commands here: a container `command:` would
            # replace the ENTRYPOINT and pair with its `args:`.
            assert before == "exec", f"command: under {before}:"
            out.append(items)
    return out


def all_commands() -> list[list[str]]:
    docker = DOCKERFILE.read_text()
    entrypoint = dockerfile_instructions(docker)["ENTRYPOINT"]
    commands = unit_commands(UNIT.read_text()) + dockerfile_commands(docker)
    for path in MANIFESTS:
        commands += manifest_commands(path.read_text(), entrypoint)
    return commands


# ------------------------------------------------------------- validation


class Invalid(Exception):
    pass


def check_invocation(argv: list[str], keyring: Path) -> None:
    """Raise Invalid unless `argv` is a command line `overlay` accepts: the
    parser takes it, and an agent's flags build its settings."""
    if not argv or argv[0] != "overlay":
        raise Invalid(f"not an overlay command: {argv}")
    args = [str(FILES.get(a, a)) for a in argv[1:]]
    try:
        ns = build_parser(args).parse_args(args)
    except SystemExit as exc:
        raise Invalid(f"{shlex.join(argv)}: the parser refuses it") from exc
    try:
        if getattr(ns, "control", None) is not None and ns.control != "none":
            parse_control(ns.control)
        if ns.command == "agent":
            if ns.key_file is not None:
                ns.key_file = str(keyring)  # the deployed one is a secret
            for seed in ns.join or []:
                parse_seed(seed, 7946)
            _agent_settings(ns)
    except ValueError as exc:  # SettingsError, SeedError are ValueErrors
        raise Invalid(f"{shlex.join(argv)}: {exc}") from exc


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    path = tmp_path / "keyring"
    path.write_text(generate_key() + "\n")
    return path


def test_the_deploy_files_run_overlay_as_expected() -> None:
    commands = all_commands()
    shapes = sorted(" ".join(c[:2]) for c in commands)
    # the unit's agent, the image's agent and health check, the pod's agent
    # and its readiness probe
    assert shapes == ["overlay agent"] * 3 + ["overlay stats"] * 2
    unit = unit_commands(UNIT.read_text())[0]
    assert "--snapshot" in unit and "/run/credentials/overlay.service/keyring" in unit
    pod = next(c for c in commands if any("_gossip._tcp.overlay." in a for a in c))
    seed = "_gossip._tcp.overlay.default.svc.cluster.local"
    assert f"--join={seed}" in pod and parse_seed(seed, 7946).kind == "srv"


@pytest.mark.parametrize("argv", all_commands(), ids=lambda c: " ".join(c[:2]))
def test_every_overlay_command_is_valid(argv: list[str], keyring: Path) -> None:
    check_invocation(argv, keyring)


@pytest.mark.parametrize(
    "argv",
    [
        ["overlay", "agent", "--bogus-flag"],
        ["overlay", "agent", "--bind", "0.0.0.0"],  # no port
        ["overlay", "agent", "--join", "10.0.0.1:99999"],
        ["overlay", "agent", "--join=overlay.default.svc:gossip"],  # a port name, not a number
        ["overlay", "agent", "--gossip.fanout", "many"],
        ["overlay", "agent", "--config", "/nonexistent/agent.toml"],
        ["overlay", "stats", "--json", "--control", "127.0.0.1"],
        ["overlay", "statz", "--json"],
        ["serf", "agent"],
    ],
)
def test_an_invalid_command_fails_the_check(argv: list[str], keyring: Path) -> None:
    with pytest.raises(Invalid):
        check_invocation(argv, keyring)


def test_the_extraction_reads_what_the_files_say() -> None:
    unit = "[Service]\nExecStart=/usr/bin/overlay agent \\\n  --key-file %d/k --tag a=100%%\n"
    assert unit_commands(unit) == [
        ["overlay", "agent", "--key-file", "/run/credentials/overlay.service/k", "--tag", "a=100%"]
    ]
    docker = (
        'ENTRYPOINT ["overlay", "agent"]\nCMD ["--bind", \\\n "0.0.0.0:1"]\n'
        'HEALTHCHECK --interval=5s CMD ["overlay", "stats"]\n'
    )
    assert dockerfile_commands(docker) == [
        ["overlay", "agent", "--bind", "0.0.0.0:1"],
        ["overlay", "stats"],
    ]
    yaml = (
        "      containers:\n"
        "        - name: agent\n"
        "          args:\n"
        "            - --name=$(POD_NAME)\n"
        '            - "--log-json"  # quoted\n'
        "          env:\n"
        "            - name: POD_NAME\n"
        "          readinessProbe:\n"
        "            exec:\n"
        '              command: ["overlay", "stats"]\n'
    )
    assert manifest_commands(yaml, ["overlay", "agent"]) == [
        ["overlay", "agent", "--name=overlay-0", "--log-json"],
        ["overlay", "stats"],
    ]
