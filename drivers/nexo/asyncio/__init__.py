"""The asyncio edge of the nexo driver: HTTP(S) to the POI, the PaymentTerminal adapter."""
