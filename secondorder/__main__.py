import sys

from secondorder._cli import main

sys.exit(main())
