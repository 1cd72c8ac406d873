import sys

from .cli import main, unwind_on_sigterm

unwind_on_sigterm()
sys.exit(main())
