"""The asyncio edge: the composition root, workers, supervision, systemd, local API."""
