import sys

from infinitetalk.cli import main

sys.exit(main())
