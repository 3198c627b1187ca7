"""The ServiceBuild API (servicebuild.dev/v1alpha1): models, conditions and the CRD generated from them."""
