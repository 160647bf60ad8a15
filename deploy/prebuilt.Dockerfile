# A program's image from binaries built outside Docker (deploy/seed-images.sh):
# the `runtime` stage of the program's own Dockerfile plus the files
# deploy/stage-rootfs.sh laid out, the same COPY as that Dockerfile's last
# stage. Nothing here is specific to a program.
#   RUNTIME   image built with `docker build --target runtime -f <program>/Dockerfile`
#   BINARIES  image holding /out/<program>/ (ownership kept, unlike a COPY from the context)
#   PROGRAM   frontend-proxy, film-service or rating-service
ARG RUNTIME
ARG BINARIES

FROM ${BINARIES} AS binaries

FROM ${RUNTIME}
ARG PROGRAM
COPY --from=binaries /out/${PROGRAM}/ /
