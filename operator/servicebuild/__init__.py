"""servicebuild-operator: in-cluster image builds with rootless BuildKit."""
