import sys

from coredoctor.cli import main

sys.exit(main())
