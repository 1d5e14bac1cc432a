import sys

try:
    from .cli.main import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C while still importing: no traceback for that either
    sys.exit(130)
