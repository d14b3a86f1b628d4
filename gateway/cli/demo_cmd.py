"""``evpay demo``: the embedded site simulation (gateway/cli/demo_site.py), run by the daemon's
own code end to end. Only the parser is here: the site imports the whole daemon, the simulators
and aiohttp, which no other command's start should pay for."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the embedded demo site end to end")
    demo.add_argument("--verbose", action="store_true", help="show the daemon's log lines")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo_site import demo

    return demo(args)
