"""`python -m emerge_assets.demo` (what `make demo` runs): an alias of `emerge curate`
(`emerge_assets.curate`), which curates the bundled sample corpus when no `--input-root` is given."""

import sys

from emerge_assets.curate import main

if __name__ == "__main__":
    sys.exit(main())
