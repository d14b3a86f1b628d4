"""EVPay Edge gateway: the payment engine, its store, upstream OCPI link and runtime.

Layering (enforced by review and by tests/test_layers.py):
``gateway.runtime`` wires everything; ``gateway.store`` owns SQLite; the sans-I/O cores
(``gateway.payments`` and the drivers' codecs) never touch sockets, clocks or files.
"""

__version__ = "0.1.0"
