# The refine image: AffinityNet training and random-walk refinement.
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-refine" \
      org.opencontainers.image.description="freemask: AffinityNet training and random-walk refinement"
USER 10001
ENTRYPOINT ["freemask"]
