import sys

from infinitetalk_live.cli import main

sys.exit(main())
