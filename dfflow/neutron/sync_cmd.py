"""`dfflow neutron-sync`: load neutron-server's configuration and plugins in this process, then sync.

Neutron is read through its own plugins (as neutron-server does, from its database) rather than its REST
API: no credentials or running API are needed (an operator can repair the NB before starting the servers),
every port's inactive bindings and every network's segments come from one query each, and the very
functions the driver's hooks write with turn them into NB objects. The driver loaded here runs no
background task (`[dfflow] background_tasks = false`): no VIF-up watcher, no maintenance.
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from dfflow.neutron import sync


def load_neutron(config_files: Sequence[str], config_dir: str | None) -> None:
    from oslo_config import cfg

    from neutron import manager
    from neutron.common import config as n_config

    from dfflow.neutron import config

    args = [f"--config-file={path}" for path in config_files]
    if config_dir:
        args.append(f"--config-dir={config_dir}")
    n_config.register_common_config_options()
    n_config.init(args)
    n_config.set_config_defaults()
    config.register()
    cfg.CONF.set_override("background_tasks", False, config.GROUP)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    manager.init()


def run(config_files: Sequence[str], config_dir: str | None, mode: str) -> tuple[sync.Drift, dict[str, int]]:
    """The drift (repaired in mode `repair`), and the NB writes neutron-server saw fail, per kind."""
    load_neutron(config_files, config_dir)
    from dfflow.neutron import config, maintenance, neutron_state
    from dfflow.neutron.nbclient import NbClient

    nb = NbClient(**config.nb_client_args())
    try:
        return sync.run(nb, neutron_state.read, mode), maintenance.recorded_failures(nb)
    finally:
        nb.close()
