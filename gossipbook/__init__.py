"""gossipbook: replicated trading order books.

The pure core (``gossipbook.core``) holds every state machine; ``gossipbook.node`` is the trio shell
that feeds it real sockets and time, ``gossipbook.sim`` feeds it virtual ones.
"""

__version__ = "0.1.0"
