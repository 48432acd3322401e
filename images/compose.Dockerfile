# The compose image: object placement (heuristic or FOPA) and multi-object scenes.
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-compose" \
      org.opencontainers.image.description="freemask: object placement (heuristic or FOPA) and multi-object scenes"
USER 10001
ENTRYPOINT ["freemask"]
