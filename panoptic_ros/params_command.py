"""``panoptic-ros params``: print the parameter schema as YAML defaults or a Markdown table."""
from __future__ import annotations

import argparse

from panoptic_ros.params import NodeParams, markdown_table, to_yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="print the node's parameters as a ROS 2 params file or a Markdown table",
                       description=__doc__)
    p.add_argument("--markdown", action="store_true", help="a Markdown table (the README's) instead of YAML")
    p.add_argument("--node-name", default="/**", help="node key of the params file (default: /**)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(markdown_table(NodeParams) if args.markdown else to_yaml(NodeParams, args.node_name), end="")
    return 0
