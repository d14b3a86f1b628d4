"""Charger-firmware link over MQTT (EVerest-style topics).

Not built yet: the engine reaches chargers through ``gateway.payments``' charger interface,
and this package will hold the MQTT implementation of it (topics, payload models, link).
It imports nothing from ``gateway`` or ``drivers``.
"""
