"""Campaigns: what breaks a payments gateway, thrown at its parts and at the real daemon.

Each campaign runs at two sizes: ``small`` inside the default suite (``test_campaigns.py``)
and ``full`` on demand, one command each:

    .venv/bin/python -m tests.campaigns crash --size full [--seed N] [--keep DIR]
    .venv/bin/python -m tests.campaigns lost-results --size full [--seed N]
    .venv/bin/python -m tests.campaigns fuzz --size full [--seed N] [--target NAME] [--engine atheris]
    .venv/bin/python -m tests.campaigns scan PATH... [--secret S]

- ``crash`` (``crash.py``): the real daemon SIGKILLed at random and at dangerous moments while
  EVs charge and pay on two terminals; the store, the terminals' books and the CPO must agree.
- ``lost-results`` (``lost.py``): the terminal's answers to pre-auth, capture and release lost
  before and after it acted, against the real engine and store; resolved by asking it.
- ``fuzz`` (``fuzz.py``): every parser that takes outside bytes, fed mutated examples; only
  its own typed errors, no hang. Failing inputs are kept under ``crashers/`` and replayed.
- ``scan`` (``scan.py``): databases, logs, outbox payloads and exports searched for anything
  that looks like a full card number (Luhn-valid, 13 to 19 digits) or a secret in clear.

Each prints its figures; ``RESULTS.md`` records the full-size ones with the machine they ran on.
"""
