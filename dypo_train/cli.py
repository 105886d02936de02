"""The `dypo-train` command. The trainer is not part of this release; the data it reads is."""

from __future__ import annotations

import sys


def main() -> None:
    print(
        "error: dypo-train is not available in this release "
        "(fix: prepare data with `dypo-data generate` and `dypo-data verify`; training lands in the next release)",
        file=sys.stderr,
    )
    sys.exit(2)


if __name__ == "__main__":
    main()
