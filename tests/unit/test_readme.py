"""The README's two set-up commands stay true: CI runs the second, the first starts the demo."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from llmd_router.cli.main import build_parser

ROOT = Path(__file__).parents[2]


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.DOTALL)[:2]


def test_the_readme_opens_with_two_one_line_commands():
    text = (ROOT / "README.md").read_text()
    first_blocks = re.findall(r"```(\w*)\n(.*?)\n```", text, flags=re.DOTALL)[:2]
    assert [lang for lang, _ in first_blocks] == ["sh", "sh"]
    assert all("\n" not in body for _, body in first_blocks)
    head = text.split("```")[0].strip()
    assert head == "# llmd-router"  # nothing but the title comes before them


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    (declared,) = re.findall(r'^TEST_COMMAND="(.*)"$', ci, flags=re.MULTILINE)
    assert declared == commands()[1]


def test_the_first_command_starts_the_demo_where_the_readme_says():
    install, _, run = commands()[0].rpartition(" && ")
    assert "pip install -e ." in install
    argv = shlex.split(run)
    assert argv[0] == "llmd-router"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "demo"
    text = (ROOT / "README.md").read_text()
    assert f"localhost:{args.port}/v1/" in text  # the example request goes to the demo's port
