"""`kubectl servicebuild`: the command line for people who build services (the `[cli]` extra).

`main` holds the commands; `context` packs a folder as the operator's ConfigMap archive; `views` turns
ServiceBuilds into what the commands print; `follow` watches a build to its end; `completion` answers
kubectl's plugin completion. The API is reached only through `servicebuild.kube`; nothing of the
operator's process (Kopf, the handlers, the reconciler) is imported here, nor is this by the operator.
"""
