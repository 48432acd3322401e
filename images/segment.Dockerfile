# The segment image: Mask2Former pseudo-labelling, training and evaluation.
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-segment" \
      org.opencontainers.image.description="freemask: Mask2Former pseudo-labelling, training and evaluation"
USER 10001
ENTRYPOINT ["freemask"]
