# The active image: the IoU filter, joins and MLflow bookkeeping (no GPU).
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-active" \
      org.opencontainers.image.description="freemask: the IoU filter, joins and MLflow bookkeeping (no GPU)"
USER 10001
ENTRYPOINT ["freemask"]
