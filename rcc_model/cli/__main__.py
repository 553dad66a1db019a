import sys

from rcc_model.cli import main

sys.exit(main())
