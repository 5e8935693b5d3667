"""The shape of the project, from its imports: no module imports itself
through others (no circle), and the dependency direction of DESIGN.md holds
(`daemon -> overlay`, `sim -> overlay`; `overlay/` imports neither, and
`daemon/` and `sim/` never import each other).

The graph is read from the source with `ast`, every import counted: at the
top, inside functions, under `if TYPE_CHECKING:`. A circle through a lazy
or a type-only import is still a circle for a reader."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("overlay", "daemon", "sim")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project's modules that `module` imports (a `from pkg import mod`
    names the module `pkg.mod` when there is one, else `pkg`)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {name for name in found if name in known and name != module}


def import_graph() -> nx.DiGraph:
    files = {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    known = set(files)
    graph: nx.DiGraph = nx.DiGraph()
    graph.add_nodes_from(known)
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for target in _imported(tree, module, path.name == "__init__.py", known):
            graph.add_edge(module, target)
    return graph


def _package(module: str) -> str:
    return module.partition(".")[0]


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    assert graph.has_edge("daemon.agent", "overlay.node")
    assert graph.has_edge("daemon.service", "daemon.agent")
    assert graph.has_edge("overlay.node", "overlay.codec")  # `from overlay import codec`
    assert graph.has_edge("daemon.cli", "daemon.agent")  # imported inside a function


def test_no_module_imports_itself_through_others() -> None:
    cycles = sorted(sorted(c) for c in nx.simple_cycles(import_graph()))
    assert cycles == []


def test_dependencies_point_one_way() -> None:
    forbidden = {("overlay", "daemon"), ("overlay", "sim"), ("daemon", "sim"), ("sim", "daemon")}
    wrong = sorted(
        (a, b) for a, b in import_graph().edges if (_package(a), _package(b)) in forbidden
    )
    assert wrong == []


def test_the_control_api_and_the_agent_are_composed_not_entangled() -> None:
    """The control API types against a protocol; the agent knows neither
    its control API nor its metrics endpoint (`daemon.service` runs them)."""
    graph = import_graph()
    assert not graph.has_edge("daemon.control", "daemon.agent")
    assert not graph.has_edge("daemon.agent", "daemon.control")
    assert not nx.has_path(graph, "daemon.control", "daemon.agent")


# --------------------------------------------------------------------------
# What an agent process loads (issue 14: its RSS). The simulator's analysis
# and plotting libraries, the test tools and the entry-point machinery are
# megabytes each; an `overlay agent` uses none of them.

# Heavy modules no agent needs; a key is in `sys.modules` once imported.
AGENT_MUST_NOT_LOAD = (
    "networkx",
    "matplotlib",
    "numpy",
    "scipy",
    "pandas",
    "hypothesis",
    "rich",
    "dns",  # dnspython: only for a seed that needs DNS (daemon.dns)
    "prometheus_client",  # only with --metrics (daemon.prometheus)
    "pytest",
    "sim",
    "importlib.metadata",  # entry points: only `overlay sim` (or the help) needs them
)

# Runs the CLI as `overlay agent` does; once the agent has started (its
# control API answers), prints the loaded modules (and the source files in
# `linecache`, as source:PATH) and exits at once.
_AGENT_MODULES = """
import logging, os, sys

class _Started(logging.Handler):
    def emit(self, record):
        if record.getMessage() == "agent started":
            import linecache
            cached = ["source:" + name for name in linecache.cache]
            sys.stdout.write("\\n".join(sorted(sys.modules) + cached) + "\\n")
            sys.stdout.flush()
            os._exit(0)

logging.getLogger("overlay.agent").addHandler(_Started())
from daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _loaded_by(script: str, *args: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,  # a guard against a hang, not a measure of speed
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _heavy(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if any(m == h or m.startswith(h + ".") for h in AGENT_MUST_NOT_LOAD)
    )


def test_a_running_agent_loads_no_plotting_graph_or_test_library(tmp_path: Path) -> None:
    modules = _loaded_by(
        _AGENT_MODULES,
        "agent",
        "--bind",
        "127.0.0.1:0",
        "--control",
        f"unix:{tmp_path / 'ctl.sock'}",
        "--log-json",
    )
    assert "daemon.agent" in modules and "trio" in modules  # it did run the agent
    assert _heavy(modules) == []
    # The settings' help texts come from their source, read only for --help:
    # a running agent keeps no source text of ours in its `linecache`.
    assert [m for m in modules if m.startswith("source:") and str(ROOT) in m] == []


def test_the_agent_and_client_modules_load_nothing_heavy() -> None:
    script = (
        "import sys, daemon.cli, daemon.service, daemon.settings, daemon.client;"
        "print('\\n'.join(sys.modules))"
    )
    assert _heavy(_loaded_by(script)) == []


def test_the_sim_command_still_finds_its_plugin() -> None:
    """The entry points are skipped only for our own commands."""
    script = (
        "import sys\nfrom daemon.cli import build_parser\n"
        "p = build_parser(['sim', '--help'])\n"
        "print('\\n'.join(sys.modules))"
    )
    assert "sim.cli" in _loaded_by(script)


def test_an_agent_joining_by_name_does_not_load_dnspython(tmp_path: Path) -> None:
    """A name seed goes to the system resolver; dnspython (`daemon.dns`) is
    for SRV seeds and configured name servers only."""
    modules = _loaded_by(
        _AGENT_MODULES,
        "agent",
        "--bind",
        "127.0.0.1:0",
        "--join",
        "localhost:1",
        "--control",
        f"unix:{tmp_path / 'ctl.sock'}",
        "--log-json",
    )
    assert "daemon.discovery" in modules
    assert "daemon.dns" not in modules and "dns" not in modules


def test_prometheus_client_is_loaded_with_metrics_only(tmp_path: Path) -> None:
    """The metrics endpoint loads it (the test above: nothing without)."""
    modules = _loaded_by(
        _AGENT_MODULES,
        "agent",
        "--bind",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--control",
        f"unix:{tmp_path / 'ctl.sock'}",
        "--log-json",
    )
    assert "prometheus_client" in modules and "daemon.prometheus" in modules
    # Nothing else heavy comes with it.
    assert {m.partition(".")[0] for m in _heavy(modules)} == {"prometheus_client"}
