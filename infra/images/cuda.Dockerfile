# videopoet, CUDA image: JAX on NVIDIA GPUs (H100/H200 node pools, GPU Ray workers, Dataflow GPU workers).
# Build from the repository root:  docker build -f infra/images/cuda.Dockerfile -t IMAGE .
# Tag it with what `python -m videopoet.infra.images cuda` prints (a hash of this file and of everything it copies).
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION} AS beam

FROM python:3.11-slim-bookworm
ARG BEAM_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libsndfile1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/videopoet
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY rundir rundir
COPY media media
COPY tokenizers tokenizers
COPY pipelines pipelines
COPY trainer trainer
COPY infra infra
COPY cli cli
RUN pip install --no-cache-dir ".[cuda,gcp,gke]" "apache-beam[gcp]==${BEAM_VERSION}"
# The Beam SDK harness boot (Dataflow, Flink and Spark portable workers start it); other targets
# give the container an explicit command.
COPY --from=beam /opt/apache/beam /opt/apache/beam
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["/opt/apache/beam/boot"]
