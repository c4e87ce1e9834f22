"""neutron-server's `[dfflow]` settings (in neutron.conf or ml2_conf.ini)."""
from __future__ import annotations

from oslo_config import cfg

GROUP = "dfflow"
OPTS = [
    cfg.StrOpt("nb_url", default="redis://127.0.0.1:6379/0",
               help="The dfflow NB db (Redis URL) the controllers on the compute nodes follow."),
    cfg.StrOpt("nb_prefix", default="dfflow", help="Key prefix of the NB db in Redis."),
    cfg.FloatOpt("nb_timeout", default=30.0, min=0.1,
                 help="Seconds an NB call may take before the Neutron operation fails."),
    cfg.BoolOpt("sync_on_startup", default=True,
                help="Repair the NB db from Neutron's database (`dfflow neutron-sync --mode repair`) when an "
                     "API process has loaded its plugins; one process at a time (a Redis lock)."),
    cfg.IntOpt("sync_interval", default=0, min=0,
               help="Seconds between full syncs by the maintenance task; 0: none (start-up and repairs only)."),
    cfg.FloatOpt("maintenance_interval", default=5.0, min=0.1,
                 help="Seconds between the maintenance task's looks for NB writes that failed (it repairs them)."),
    cfg.IntOpt("sync_lock_seconds", default=600, min=1,
               help="Expiry of the sync's Redis lock, should its holder die while syncing."),
    cfg.BoolOpt("background_tasks", default=True,
                help="Run the VIF-up watcher and the maintenance task in this process (the neutron-sync "
                     "command turns this off)."),
]


def register(conf: cfg.ConfigOpts = cfg.CONF) -> cfg.ConfigOpts:
    conf.register_opts(OPTS, GROUP)
    return conf


def nb_client_args(conf: cfg.ConfigOpts = cfg.CONF) -> dict:
    register(conf)
    group = conf[GROUP]
    return {"url": group.nb_url, "prefix": group.nb_prefix, "timeout": group.nb_timeout}
