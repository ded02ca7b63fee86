import sys

from posebh.selfcheck.run import main

sys.exit(main())
