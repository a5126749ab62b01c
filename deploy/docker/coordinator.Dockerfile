# syntax=docker/dockerfile:1
# The coordinator image: the fleet coordinator: the base install + the FL round server (CKKS, DP accountant), no torch.
# Build from the repository root: docker build -f deploy/docker/coordinator.Dockerfile -t edgecollab-coordinator:0.1.0 .
# Exactly the locked versions (constraints.txt); nothing is downloaded when the container runs.
ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY collab ./collab
COPY edge_node ./edge_node
COPY cloud_node ./cloud_node
COPY coordinator ./coordinator
RUN python -m venv /opt/collab \
 && /opt/collab/bin/pip install --no-cache-dir -c constraints.txt ".[coordinator]"

FROM ${PYTHON}
COPY --from=build /opt/collab /opt/collab
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin collab
USER 10001
ENV PATH=/opt/collab/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 50070 9102
ENTRYPOINT ["collab"]
CMD ["coordinator", "--help"]
