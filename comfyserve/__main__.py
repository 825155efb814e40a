import sys

from comfyserve.cli import main

sys.exit(main())
