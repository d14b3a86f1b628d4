"""The payment engine, sans-I/O: tariff pricing, pre-authorisation strategies and the
charging-session state machine. Nothing here touches sockets, files, clocks or asyncio:
events and ``now`` go in, a new session and commands come out.
"""
