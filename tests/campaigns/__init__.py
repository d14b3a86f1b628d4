"""Campaigns: what breaks a payments gateway, thrown at its parts and at the real daemon.

Each campaign runs at two sizes: ``small`` inside the default suite (``test_campaigns.py``)
and ``full`` on demand, one command each:

    .venv/bin/python -m tests.campaigns fuzz --size full [--seed N] [--target NAME]
    .venv/bin/python -m tests.campaigns scan PATH...

- ``fuzz`` (``fuzz.py``): every parser that takes outside bytes, fed mutated examples; only
  its own typed errors, no hang. Failing inputs are kept under ``crashers/`` and replayed.
- ``scan`` (``scan.py``): databases, logs, outbox payloads and exports searched for anything
  that looks like a full card number (Luhn-valid, 13 to 19 digits) or a secret in clear.

Each prints its figures; ``RESULTS.md`` records the full-size ones with the machine they ran on.
"""
