# The shared base of every freemask image: pinned CUDA, Python and torch, the freemask package,
# a non-root user. Built by `make images`; stage images start FROM it.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/freemask \
    PATH=/opt/freemask/bin:$PATH \
    HF_HOME=/home/freemask/.cache/huggingface

# Python 3.12 is Ubuntu 24.04's own; OpenCV needs libGL and GLib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.* python3.12-venv=3.12.* libgl1=1.7.* libglib2.0-0t64=2.80.* \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the CUDA 12.8 index, so that nothing else pulls another build.
RUN python3.12 -m venv /opt/freemask \
    && pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128

WORKDIR /src
COPY pyproject.toml README.md ./
COPY freemask ./freemask
COPY components ./components
COPY pipelines ./pipelines
RUN pip install . && rm -rf /src

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin freemask
USER 10001
WORKDIR /home/freemask
ENTRYPOINT ["freemask"]
