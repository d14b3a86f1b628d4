"""One target under atheris (libFuzzer), in a process of its own: our packages are imported
inside ``instrument_imports``, so coverage is ours and not the libraries' (instrumenting every
loaded module took half a minute a target)."""

from __future__ import annotations

import argparse

import atheris

with atheris.instrument_imports(include=["drivers", "gateway", "firmware_bridge"]):
    from tests.campaigns import fuzz


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    fuzz.run_atheris(fuzz.target(args.target), args.runs, args.seed)


if __name__ == "__main__":
    main()
