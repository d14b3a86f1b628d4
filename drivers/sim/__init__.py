"""A PT-side ZVT terminal simulator that speaks the real wire protocol on a pty or TCP socket.

Used by the tests, ``evpay demo``, the HIL rig's dry runs, and standalone as
``evpay simulate terminal``. It shares the link cores with the driver (``drivers.zvt.link``)
but none of the ECR logic, so a bug on one side is not mirrored on the other.
"""
