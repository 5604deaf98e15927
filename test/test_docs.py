"""The README stays true: its parameter table is the schema's, its test command is what CI runs."""
import re
from pathlib import Path

from panoptic_ros.cli import SUBCOMMANDS
from panoptic_ros.params import NodeParams, markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_parameter_table_is_generated_from_the_schema():
    assert markdown_table(NodeParams) in README, "regenerate it: panoptic-ros params --markdown"


def test_the_two_commands_and_ci_agree():
    commands = re.findall(r"^bash tools/setup_env\.sh && (.+?)\s+#", README, re.M)
    assert commands == [".venv/bin/panoptic-ros demo", ".venv/bin/python -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tools/setup_env.sh" in ci and "\n.venv/bin/python -m pytest -q\n" in ci


def test_every_subcommand_is_documented():
    for name, _ in SUBCOMMANDS:
        assert f"`{name}" in README, f"README lacks the {name} command"


def test_every_option_of_every_subcommand_has_help():
    import argparse

    from panoptic_ros.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {name for name, _ in SUBCOMMANDS}
    missing = [f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
               for name, parser in sub.choices.items() for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, f"options without --help text: {missing}"
