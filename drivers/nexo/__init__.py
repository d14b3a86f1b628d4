"""nexo Sale to POI (ISO 20022 casp): a sans-I/O core (model, XML and Adyen-JSON codecs, Adyen
application-level encryption, the ServiceID tracker) plus an asyncio adapter in ``asyncio/``."""
