import sys

from gausslift.cli import main

sys.exit(main())
