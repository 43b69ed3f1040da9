"""Watch streams: the Kubernetes list/watch protocol as a pure core, and the sources around it."""
