import sys

from jsuff.app.cli import main

sys.exit(main())
