# SPDX-License-Identifier: Apache-2.0
# Build on debian:12 with the same script a developer runs (bootstrap.sh), run
# on debian:12-slim as an unprivileged user with only the runtime libraries.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN ./bootstrap.sh --build-only build

FROM debian:12-slim
COPY bootstrap.sh /tmp/bootstrap.sh
RUN /tmp/bootstrap.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/bootstrap.sh \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cibroker
COPY --from=build /src/build/cibroker /usr/bin/cibroker
COPY policies /usr/share/cibroker/policies
USER 10001:10001
EXPOSE 8080
HEALTHCHECK CMD ["/usr/bin/cibroker", "--version"]
ENTRYPOINT ["/usr/bin/cibroker"]
CMD ["serve", "--config", "/etc/cibroker/config.yaml"]
