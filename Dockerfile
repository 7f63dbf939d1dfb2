# lineside in a container: built from the project's wheel, run as an unprivileged user, the
# store on a volume. Build: docker build -t lineside .   Run: see compose.yaml, docs/install.md.

# --- build: the lineside wheel and the wheels of its dependencies --------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY agent agent
COPY connectors connectors
COPY vision vision
COPY firmware-sim firmware-sim
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: only the installed wheels, no sources, no compiler -------------------------------------
FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels lineside \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/lineside \
       --shell /usr/sbin/nologin lineside \
    && install -d -o lineside -g lineside -m 0750 /var/lib/lineside \
    && install -d -m 0755 /etc/lineside
ENV PYTHONUNBUFFERED=1
# The config is mounted read-only at /etc/lineside/lineside.toml; its data_dir is the volume.
VOLUME ["/var/lib/lineside"]
WORKDIR /var/lib/lineside
USER lineside
EXPOSE 8470
# Liveness: /healthz on the status page's default port (no token needed for it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8470/healthz', timeout=4)"]
# SIGTERM (docker stop) drains the store before the agent exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lineside"]
CMD ["run", "--config", "/etc/lineside/lineside.toml"]
