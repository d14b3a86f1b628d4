"""The charger firmware over MQTT: our topic contract (``contract.py``, documented in
``README.md``), the link that implements the engine's charger port over it (``link.py``), and
a charger simulator that speaks the same contract on a real broker (``sim.py``)."""
