# embedgate on CPU: the server and the bundled all-MiniLM-L6-v2 model, no GPU libraries.
# Larger models run in upstream engines (SGLang, vLLM, TEI) or from a mounted /models.
#
#   docker build -t embedgate:0.1.0 .
#   docker run -d --name embedgate -p 127.0.0.1:8000:8000 --env-file /etc/embedgate/env \
#       -v embedgate-data:/data embedgate:0.1.0
#
# No secret is baked in: the admin key, the server secret and database passwords come from
# the environment or from secret files at run time (docs/deployment.md#docker).
FROM python:3.11-slim

# PyTorch's CPU wheel index: on PyPI the Linux torch wheels are CUDA builds that pull
# several GB of nvidia-* packages. For a CUDA image, build with
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (and run with --gpus).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/data/hf \
    EMBEDGATE_HOST=0.0.0.0 \
    EMBEDGATE_PORT=8000 \
    EMBEDGATE_DATA_DIR=/data

# jemalloc: `embedgate serve` preloads it (EMBEDGATE_ALLOCATOR=auto), which keeps a long-running
# server's memory flat at full speed; glibc's heap grows under torch (docs/benchmarks.md#soak).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid, so that bind-mounted data and secret files can be owned by it on the host.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin \
        embedgate \
    && install -d -o embedgate -g embedgate -m 0700 /data

# PyTorch first, as the README installs it, so that `pip install .` finds it satisfied.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md /build/
COPY src /build/src
RUN pip install /build && rm -rf /build

USER embedgate
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

# /health answers 200 when serving ("ok" or "degraded") and 503 when not ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EMBEDGATE_PORT', '8000'), timeout=4)" || exit 1

ENTRYPOINT ["embedgate"]
CMD ["serve"]
