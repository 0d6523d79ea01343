# The LossGym image: the API, the worker and every training/evaluation container
# start from it (docker compose builds it as `lossgym-trainer`).
#
#   docker build -t lossgym-trainer .
#   docker build -t lossgym-trainer --build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:25.01-py3 .
#
# BASE_IMAGE must provide Python >= 3.11 with a CUDA build of PyTorch >= 2.4 on
# PATH as `python`; the project's own requirement on torch is then already met
# and pip installs nothing CUDA-sized on top.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOSSGYM_TASKS_DIR=/opt/lossgym/tasks \
    LOSSGYM_DATA_DIR=/var/lib/lossgym/data \
    LOSSGYM_RUNS_DIR=/var/lib/lossgym/runs \
    LOSSGYM_DATABASE=/var/lib/lossgym/db/lossgym.db \
    LOSSGYM_DOCKER_IMAGE=lossgym-trainer

WORKDIR /opt/lossgym
COPY pyproject.toml README.md ./
COPY lossgym ./lossgym
COPY tasks ./tasks
# Fails the build if pip would replace the base image's torch.
RUN python -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && python -m pip install --no-cache-dir . \
 && python -c "import torch; print('torch after install', torch.__version__)" \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin lossgym \
 && mkdir -p /var/lib/lossgym/data /var/lib/lossgym/runs /var/lib/lossgym/db \
 && chown -R lossgym:lossgym /var/lib/lossgym

# The service runs unprivileged; training containers run as 65534 (nobody).
USER lossgym
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["lossgym", "serve", "--host", "0.0.0.0", "--no-worker"]
