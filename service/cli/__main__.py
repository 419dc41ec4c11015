import sys

from winnow.service.cli.main import main

sys.exit(main())
