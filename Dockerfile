# The relay image: every service of docker-compose.yml runs `relay <command>` from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Metadata first, so editing code does not invalidate the layer of the dependencies' wheels.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingress ./ingress
COPY workers ./workers
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 10001 relay \
    && mkdir -p /data \
    && chown relay:relay /data

USER relay
WORKDIR /data
EXPOSE 8080 9100
ENTRYPOINT ["relay"]
CMD ["--help"]
