"""Forwarders: the frames they add (relay), the forwarder process (forwarder) and the
controller's routes through them (routes)."""
