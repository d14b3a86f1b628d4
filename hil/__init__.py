"""Hardware-in-the-loop: the acceptance scenarios run against a real terminal on the bench, or
against the simulator on a pty (``--device sim``, part of the test suite)."""
