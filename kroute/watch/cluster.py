"""Where the API server is and how to authenticate: the only importer of `kubernetes`.

The `kubernetes` package costs about 310 ms and 32 MiB to import (SEMANTICS.md section 4), so it
is imported here, lazily, only when a cluster is used. Its loaders read kubeconfig files
(contexts, client certificates, bearer tokens, exec plugins with refresh) and the in-cluster
service account; kroute then reads the resulting `Configuration`:
- the TLS context from `ssl_ca_cert`, `cert_file`/`key_file`, `verify_ssl`, `tls_server_name`;
- the headers from `auth_settings()` on every (re)connect, in a worker thread, because exec
  plugins block and token refresh hooks run there. (Since v36 the token lives under
  `api_key['BearerToken']`: read it through `auth_settings()`, never by key.)
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from kroute.errors import ConfigError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class Cluster:
    """An API server endpoint with its TLS settings and a way to get fresh credentials."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration
        self.base_url: str = str(configuration.host).rstrip("/")
        self.ssl_context = self._ssl_context() if self.base_url.startswith("https") else None
        self.server_name: str | None = getattr(configuration, "tls_server_name", None)

    def _ssl_context(self) -> ssl.SSLContext:
        cfg = self.configuration
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        return context

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request now (may run an exec plugin: call in a thread)."""
        headers = {}
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = str(setting["value"])
        return headers

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None) -> Cluster:
        """The cluster of a kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."""
        import kubernetes.client
        import kubernetes.config

        cfg = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_kube_config(
                config_file=path, context=context, client_configuration=cfg
            )
        except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
            raise ConfigError(f"kubeconfig {path or '(default)'}: {exc}") from None
        return cls(cfg)

    @classmethod
    def in_cluster(
        cls, directory: str = SERVICE_ACCOUNT_DIR, *, environ: dict[str, str] | None = None
    ) -> Cluster:
        """The cluster a pod runs in: its service account token (re-read as it rotates), CA
        and the KUBERNETES_SERVICE_HOST/PORT environment."""
        import kubernetes.client
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.config.incluster_config import InClusterConfigLoader

        cfg = kubernetes.client.Configuration()
        loader = InClusterConfigLoader(
            token_filename=os.path.join(directory, "token"),
            cert_filename=os.path.join(directory, "ca.crt"),
            environ=os.environ if environ is None else environ,
        )
        try:
            loader.load_and_set(cfg)
        except (ConfigException, OSError) as exc:
            raise ConfigError(f"in-cluster configuration from {directory}: {exc}") from None
        return cls(cfg)
