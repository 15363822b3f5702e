import sys

from nevisbench.cli import main

sys.exit(main())
