import sys

from lightship.cli import main

sys.exit(main())
