"""OCPI 2.3.0 upstream: the gateway as Payment Terminal Provider (PTP) towards the CPO.

``models`` validates every object at the boundary; ``fac`` maps a finished session to a
Financial Advice Confirmation; ``client`` speaks HTTP with the OCPI headers; ``pusher`` drains
the store's outbox (store and forward); ``cpo_sim`` is the embedded CPO for tests and demos.
"""
