"""Client side: a service's own outgoing requests sent straight to Kubernetes endpoints."""
