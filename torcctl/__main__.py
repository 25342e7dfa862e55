import sys

from torcctl.cli import main

sys.exit(main())
