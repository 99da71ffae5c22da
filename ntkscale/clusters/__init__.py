"""The ``[cluster]`` section of a job file: validate it, start or connect the cluster.

>>> from ntkscale.clusters import validate_cluster, start_cluster
>>> spec = validate_cluster({"kind": "local", "workers": 2})     # + NTKSCALE_CLUSTER_* overrides
>>> with start_cluster(spec) as handle:                          # doctest: +SKIP
...     build_gram(..., client=handle.client_arg)
...     report["cluster"] = handle.describe()

Kinds: ``local`` (LocalCluster of pinned single-threaded worker processes), ``address``
(an existing scheduler, ``tcp://`` or ``tls://``), ``slurm`` (dask-jobqueue, extra
``ntkscale[slurm]``), ``kubernetes`` (dask-kubernetes operator, extra
``ntkscale[kubernetes]``), ``sync`` (in-process, tiny jobs and tests). ``deploy/``
holds the matching job files, sbatch script, manifests, images and a certificate script.
"""

from .handle import ClusterHandle, start_cluster
from .kubernetes import kubernetes_manifest
from .slurm import slurm_cluster_kwargs, slurm_job_script
from .spec import KINDS, ClusterSpec, KubernetesSpec, SlurmSpec, TLSSpec, validate_cluster
from .tls import make_security

__all__ = ["KINDS", "ClusterHandle", "ClusterSpec", "KubernetesSpec", "SlurmSpec", "TLSSpec",
           "kubernetes_manifest", "make_security", "slurm_cluster_kwargs", "slurm_job_script",
           "start_cluster", "validate_cluster"]
