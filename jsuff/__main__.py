import sys

from jsuff.cli import main

sys.exit(main())
