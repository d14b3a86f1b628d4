"""The asyncio adapter: drives the sans-I/O ZVT cores of ``drivers.zvt`` over a transport.

``client`` runs the link and sequence state machines over a ``Transport`` and its timers;
``terminal`` maps the ZVT exchanges onto the one ``PaymentTerminal`` interface. Nothing in
``drivers.zvt`` itself imports this package, a transport or asyncio (a test checks it), as
aioquic keeps ``quic/`` apart from ``asyncio/``.
"""
