import sys

from secondorder.cli import main

sys.exit(main())
