import sys

from torcd.cli import main

sys.exit(main())
