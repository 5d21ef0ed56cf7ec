# The relay image: every service of docker-compose.yml runs `relay <command>` from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The dependencies in a layer of their own, read from the project's metadata alone: editing the code
# does not invalidate it.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY shared ./shared
COPY ingress ./ingress
COPY workers ./workers
COPY ops ./ops
COPY simulator ./simulator
COPY migrations ./migrations
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 relay \
    && mkdir -p /data \
    && chown relay:relay /data

USER relay
WORKDIR /data
EXPOSE 8080 9100
ENTRYPOINT ["relay"]
CMD ["--help"]
