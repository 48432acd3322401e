# The generate image: Stable Diffusion drawing with attention capture, and scene backgrounds.
# BASE_IMAGE is the freemask base image of the same tag (`make images` passes it).
ARG BASE_IMAGE=ghcr.io/freemask/freemask-base:0.1.0
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="freemask-generate" \
      org.opencontainers.image.description="freemask: Stable Diffusion drawing with attention capture, and scene backgrounds"
USER 10001
ENTRYPOINT ["freemask"]
