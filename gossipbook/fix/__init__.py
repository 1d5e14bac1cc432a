"""A FIX 4.4 order-entry gateway in front of a gossipbook cluster (docs/fix.md).

The split follows the core's: ``session`` (the FIX session protocol) and ``app`` (orders and
execution reports) are pure state machines fed bytes, messages and ``now``; ``codec`` frames and
parses with simplefix; ``store`` keeps what must survive a restart; ``gateway`` is the trio shell
that owns the sockets, the clock and one ``gossipbook.Client`` per trading session. Importing this
package loads none of them.
"""
