# The harmonize image: colour-transfer and PCTNet harmonization.
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-harmonize" \
      org.opencontainers.image.description="freemask: colour-transfer and PCTNet harmonization"
USER 10001
ENTRYPOINT ["freemask"]
