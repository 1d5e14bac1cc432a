"""The trio shell: sockets, timers, storage and the client side; every decision is in ``core``."""
