# The operator image. The builder stage installs the package and its dependencies into a venv;
# the final stage holds that venv and the Python runtime, nothing else: no compilers, no pip,
# no build or download caches. Both stages use the same base, so the venv's interpreter links stay valid.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm
# The operator runs `buildctl` itself for builds on a builder pool: the client of the BuildKit release the
# build Jobs and pools run by default (config.py's `buildkit_image`; a unit test keeps the two equal).
ARG BUILDKIT_IMAGE=moby/buildkit:v0.32.2-rootless

FROM ${BUILDKIT_IMAGE} AS buildkit

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN python -m venv /opt/servicebuild
# Dependencies first, read from pyproject.toml alone, so that editing the operator's code keeps this
# layer cached. Wheels only: nothing is compiled, so the builder needs no compiler either.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
 && /opt/servicebuild/bin/pip install --only-binary=:all: --requirement requirements.txt
# Then the operator itself (README.md is the package's readme in pyproject.toml). The venv's own pip
# and setuptools go: nothing is installed at run time. So does kubernetes.aio, the Kubernetes client's
# second, asyncio copy of itself and the largest part of the venv: the operator uses the synchronous
# client and Kopf its own aiohttp one. The import at the end proves the operator loads without them.
COPY README.md ./
COPY operator/ operator/
RUN /opt/servicebuild/bin/pip install --no-deps . \
 && /opt/servicebuild/bin/pip uninstall --yes pip setuptools \
 && rm -rf /opt/servicebuild/lib/python3.*/site-packages/kubernetes/aio \
 && /opt/servicebuild/bin/python -c 'import servicebuild.__main__'

FROM ${PYTHON_IMAGE}
# The base image's own pip, setuptools and wheel are not needed at run time either. The operator runs as
# an unprivileged user that exists in /etc/passwd: Kopf names itself after the user when POD_ID is unset.
# The builds it runs on builder pools die with it through util-linux's `setpriv --pdeathsig` (checked here).
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin servicebuild \
 && setpriv --pdeathsig KILL -- true
COPY --from=builder /opt/servicebuild /opt/servicebuild
# buildctl is one static binary: nothing else of the BuildKit image comes along.
COPY --from=buildkit /usr/bin/buildctl /usr/local/bin/buildctl
ENV PATH=/opt/servicebuild/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICEBUILD_LIVENESS_ENDPOINT=http://0.0.0.0:8080/healthz
USER 10001:10001
# Kopf's liveness endpoint (GET /healthz); the metrics (GET /metrics, /readyz; SERVICEBUILD_METRICS_ADDRESS).
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "servicebuild"]
# The version `make image` reads from pyproject.toml (empty when built without it); last, so that a new
# version reuses every layer above.
ARG VERSION
LABEL org.opencontainers.image.title=servicebuild-operator \
      org.opencontainers.image.version=${VERSION}
