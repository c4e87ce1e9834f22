"""`dfflow-bench`: compares flow-update latency and migration downtime, in one run per comparison."""
from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="dfflow")
def main() -> None:
    """dfflow benchmarks. Each command compares alternatives within one run and reports ratios."""


if __name__ == "__main__":  # pragma: no cover
    main()
