import sys

from netemu.cli import main

sys.exit(main())
