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
]


def register(conf: cfg.ConfigOpts = cfg.CONF) -> cfg.ConfigOpts:
    conf.register_opts(OPTS, GROUP)
    return conf


def nb_client_args(conf: cfg.ConfigOpts = cfg.CONF) -> dict:
    register(conf)
    group = conf[GROUP]
    return {"url": group.nb_url, "prefix": group.nb_prefix, "timeout": group.nb_timeout}
