"""Ways to start clusters."""
from distributed.deploy.local import LocalCluster

__all__ = ["LocalCluster"]
