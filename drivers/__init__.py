"""Payment-terminal drivers: codecs, transports, the one driver interface, simulators.

Nothing here imports from ``gateway`` or ``firmware_bridge``: a driver is a library the
gateway uses, testable and usable (``evpay terminal …``) on its own.
"""
