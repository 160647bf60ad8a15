# The postgres:15 image for machines without a registry (deploy/seed-images.sh):
# Debian's postgresql-15 in a debootstrap rootfs (ROOTFS), with the official
# image's paths, environment, volume, port, stop signal and entry point
# behaviour (deploy/postgres/docker-entrypoint.sh).
ARG ROOTFS
FROM ${ROOTFS}
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /docker-entrypoint-initdb.d "$PGDATA" \
    && chown postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
