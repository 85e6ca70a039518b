"""The pure domain: no I/O, no framework; imports only the bus contract in ``schemas``."""
