import sys

from jsuff.app.cli import main

__all__: list[str] = []

sys.exit(main())
