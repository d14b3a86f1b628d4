"""ZVT (ECR side): the terminal protocol of most unattended card terminals at European chargers.

Layers, each sans-I/O (bytes and ``now`` in, bytes and events out):
``fields`` (BCD, LLVAR, BMPs, TLV) → ``apdu`` (APDU framing, message builders and views) →
``serial_framing`` (DLE STX … DLE ETX CRC) → ``link`` (ACK/NAK, retransmission, timers) →
``sequences`` (ECR-as-master / PT-as-master command flow, T3/T4). ``drivers.zvt.asyncio`` is
the only asyncio code: it drives those cores over a transport and implements ``PaymentTerminal``.
The cores never import it, a transport or asyncio (``tests/zvt/test_layers.py``).
"""
