"""`overlay agent --help` is a page a person reads; docs/agent.md is the
reference behind it, and its parameter section is the code's comments."""

from __future__ import annotations

import argparse
import re

import pytest

from daemon import agent_docs
from daemon.cli import build_parser
from daemon.settings import AGENT_KEYS, protocol_fields, transport_fields
from tests.test_cli import run_cli

MAX_LINES = 80
DOC = agent_docs.DOC.read_text()


def _agent_parser() -> argparse.ArgumentParser:
    parser = build_parser(["agent", "--help"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    agent: argparse.ArgumentParser = sub.choices["agent"]
    return agent


def _help(capsys: pytest.CaptureFixture[str]) -> str:
    code, out, _ = run_cli(["agent", "--help"], capsys)
    assert code == 0
    return out


def test_the_help_is_a_page(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys)
    lines = out.splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines"
    assert max(len(line) for line in lines) <= 80
    assert "docs/agent.md" in out
    # No paragraph twice: every line of text appears once.
    texts = [line.strip() for line in lines if len(line.strip()) > 20]
    assert len(texts) == len(set(texts)), [t for t in texts if texts.count(t) > 1]


def test_the_help_names_every_parameter_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _help(capsys)
    for key, _, default in protocol_fields():
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert f"{key.rpartition('.')[2].replace('_', '-')}={shown}" in out, key
    for name, default in transport_fields():
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert f"{name.replace('_', '-')}={shown}" in out, name
    for flag in ("--join", "--key-file", "--metrics", "--log-json", "--leave-grace"):
        assert flag in out


def test_every_flag_is_explained_in_docs_agent_md() -> None:
    """Every option of `overlay agent` (the settings' and any added later)
    has an entry in docs/agent.md that says more than its name."""
    flags = sorted(
        opt
        for action in _agent_parser()._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    )
    assert "--swim.probe-period" in flags and "--transport.dial-timeout" in flags
    for flag in flags:
        entries = re.findall(rf"^- .*`{re.escape(flag)}[ `].*$", DOC, re.MULTILINE)
        assert entries, f"{flag}: no entry in docs/agent.md"
        # What is left without the flags and their defaults: the explanation.
        texts = [re.sub(r"`[^`]*`( \(default [^)]*\))?", "", e).strip(" -:,.") for e in entries]
        assert max(len(t) for t in texts) > 10, flag
    # And every [agent] key of the file is a flag.
    for key in AGENT_KEYS:
        singular = {"tags": "--tag", "event_handlers": "--event-handler"}
        flag = singular.get(key, "--" + key.replace("_", "-"))
        assert flag in flags, key


def test_the_parameter_reference_is_the_codes_comments() -> None:
    """docs/agent.md's generated section matches the comments in the code:
    `python -m daemon.agent_docs` rewrites it after a change."""
    assert agent_docs.updated(DOC) == DOC, "run: python -m daemon.agent_docs"
    assert "the paper uses 5" in DOC  # overlay/config.py's reason for active_size
    assert "undocumented" not in DOC


def test_the_reference_check_fails_on_a_stale_document(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    stale = tmp_path / "agent.md"
    stale.write_text(DOC.replace("the paper uses 5", "the paper uses 6"))
    monkeypatch.setattr(agent_docs, "DOC", stale)
    assert agent_docs.main(["--check"]) == 1
    assert agent_docs.main([]) == 0
    assert agent_docs.main(["--check"]) == 0
    assert stale.read_text() == DOC
