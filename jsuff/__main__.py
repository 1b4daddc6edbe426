import sys

from jsuff.cli import main

__all__: list[str] = []

sys.exit(main())
