# The relate image: the adaptive matching thesaurus and its text-embedding matcher.
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-relate" \
      org.opencontainers.image.description="freemask: the adaptive matching thesaurus and its text-embedding matcher"
USER 10001
ENTRYPOINT ["freemask"]
