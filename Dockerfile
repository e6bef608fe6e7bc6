# syntax=docker/dockerfile:1
#
# residency-proxy container image.
#
#   docker build -t residency-proxy .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 -p 9464:9464 \
#     -v residency-decisions:/var/lib/residency-proxy residency-proxy
#
# Two stages: `build` compiles TypeScript with the dev dependencies; `runtime`
# holds production dependencies, dist/ and config/ only (what `npm pack`
# ships, plus the lockfile), runs as an unprivileged numeric user and needs
# no writable path but its VOLUME, so it runs with a read-only root filesystem.
# Both stages use one base image, pinned by exact Node.js version and variant
# (Node.js 24 LTS on Debian 13 "trixie", slim).

FROM node:24.20.0-trixie-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:24.20.0-trixie-slim AS runtime
LABEL org.opencontainers.image.title="residency-proxy" \
      org.opencontainers.image.description="Data-residency enforcement proxy for storage APIs" \
      org.opencontainers.image.licenses="MIT"
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
COPY README.md ./

# The only writable path: the decision log (config/container.yaml writes it
# here). Created and owned by the runtime user so a fresh volume inherits it.
RUN mkdir -p /var/lib/residency-proxy && chown 1000:1000 /var/lib/residency-proxy
VOLUME ["/var/lib/residency-proxy"]

# The shipped container config; mount another file over it, or mount one
# elsewhere and point RESIDENCY_CONFIG at it.
ENV RESIDENCY_CONFIG=/app/config/container.yaml

# The base image's `node` user, by number so runAsNonRoot can verify it.
USER 1000:1000

# 8080: the proxy (data plane). 9464: admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9464

# Liveness only: /healthz needs no token. Slim images have no curl; node has fetch.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ADMIN_PORT || 9464) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# SIGTERM: stop accepting, finish in-flight requests, close the log, exit 0.
STOPSIGNAL SIGTERM
# A larger young generation: see PRODUCT_NODE_FLAGS in test/bench/settings.ts (README, Performance).
ENTRYPOINT ["node", "--max-semi-space-size=32", "dist/cli/main.js"]
CMD ["serve"]
