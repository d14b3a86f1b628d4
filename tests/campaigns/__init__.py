"""Campaigns: what breaks a payments gateway, thrown at its parts and at the real daemon.

Each campaign runs at two sizes: ``small`` inside the default suite (``test_campaigns.py``)
and ``full`` on demand, one command each:

    .venv/bin/python -m tests.campaigns crash --size full [--seed N] [--keep DIR]
    .venv/bin/python -m tests.campaigns powercut --size full [--seed N] [--keep DIR]
    .venv/bin/python -m tests.campaigns partition --size full [--seed N] [--uplink-only]
    .venv/bin/python -m tests.campaigns unplug --size full [--seed N] [--keep DIR]
    .venv/bin/python -m tests.campaigns lost-results --size full [--seed N]
    .venv/bin/python -m tests.campaigns fuzz --size full [--seed N] [--target NAME] [--engine atheris]
    .venv/bin/python -m tests.campaigns scan PATH... [--secret S]

On nexo terminals (POI simulators, ``--encoding xml`` over HTTP or ``adyen-json`` over HTTPS
with the key): ``crash``, ``unplug`` and ``lost-results`` take ``--protocol nexo [--encoding
…]``; ``crash`` also ``--kills N`` (the full size's site with N kills, for a run that must end
by a given time); the fuzz targets ``nexo.*`` are the nexo decoders and the sale endpoint.

- ``crash`` (``crash.py``; ``crash_site.py`` its site, ``moments.py`` when a kill lands,
  ``nights.py`` the batches closed during the run, ``crash_books.py`` what is compared): the
  real daemon SIGKILLed at random and at dangerous moments while EVs charge and pay on two
  terminals; the store, the terminals' books and the CPO must agree.
- ``powercut`` (``powercut.py``, ``powercut_vfs.py``): the same site, but each death is a power
  cut: a SQLite VFS shim logs every write not yet fsynced, and the files are rewound to their
  last sync with some of those writes kept, reordered or torn; each image must pass the
  integrity check and hold everything the gateway had acknowledged.
- ``partition``: the CPO unreachable or the MQTT broker gone for seconds while EVs charge.
- ``unplug`` (``unplug.py``): a terminal's line cut just before each of its messages in the
  pre-auth, capture, release and repeat-receipt exchanges: TCP reset, serial cable pulled, USB
  adapter pulled and plugged in again.
- ``lost-results`` (``lost.py``): the terminal's answers to pre-auth, capture and release lost
  before and after it acted, against the real engine and store; resolved by asking it.
- ``fuzz`` (``fuzz.py``): every parser that takes outside bytes, fed mutated examples; only
  its own typed errors, no hang. Failing inputs are kept under ``crashers/`` and replayed. The
  same targets run under hypothesis in the suite (``test_hypothesis.py``) and under atheris
  (coverage-guided) with ``--engine atheris``.
- nexo (``nexo_site.py``, ``nexo_lost.py``, ``fuzz_nexo.py``, ``books.py``): the crash and
  unplug site on two nexo POI simulators, their ledgers kept in files and read hold by hold as
  a ZVT terminal's book is (``books.py``); the unplug cut is the HTTP connection dropped before
  or after the POI acted; lost results are the nexo driver's, on the wire, resolved by
  TransactionStatus (InProgress, NotFound, restarts between questions).
- ``scan`` (``scan.py``): databases, logs, outbox payloads and exports searched for anything
  that looks like a full card number (Luhn-valid, 13 to 19 digits) or a secret in clear.

Each prints its figures; ``RESULTS.md`` records the full-size ones with the machine they ran on.
"""
