#!/usr/bin/env bash
# Build the images locally without pulling any base image: operator, trainer-cpu and the CUDA trainer, all
# from one debootstrapped Debian base. Then run the CPU stub for a few training steps in the trainer-cpu
# image, and doctor's PTX compile of NeMo's RNNT loss kernels in the trainer image (no GPU needed: no CUDA
# base image either; torch's wheels bring the CUDA libraries, nvidia-nvvm libnvvm, the node the driver).
# Not part of CI: torch from PyPI (the only index reachable here) is the ~4 GB CUDA build, which makes the
# trainer builds too slow for CI. Prints timings and sizes.
#
#   images/build-local.sh                   # all three; needs root (debootstrap, podman), installs its Debian packages
#   images/build-local.sh trainer           # only the CUDA trainer image and its doctor check (a rebuild)
#   TAG=dev SKIP_TRAIN=1 images/build-local.sh operator trainer-cpu
#   IMAGES=operator images/build-local.sh   # as `images/build-local.sh operator`
#   STORAGE_DRIVER=vfs images/build-local.sh   # where podman's overlay driver does not work (slower, ~2x disk)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-0.1.0}
# trixie: its python3 (3.13) has tarfile's extraction filters, which NeMo 3 needs; bookworm's 3.11.2 lacks them.
SUITE=${SUITE:-trixie}
WORK=${WORK:-/var/tmp/quranft-images}
BASE=localhost/quranft-base:${SUITE}
# Flags that make podman work in this kind of sandbox: runc (crun lacks the needed cgroup support here),
# cgroupfs (no systemd), and explicit ulimits (the defaults exceed the sandbox's hard limits).
PODMAN_RUN_FLAGS=(--runtime /usr/sbin/runc --cgroup-manager=cgroupfs ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"})
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
say() { printf '%s build-local: %s\n' "$(date -u +%T)" "$*" >&2; }
timed() { local t0=$SECONDS; "$@"; say "  took $((SECONDS - t0)) s"; }

need=()
for tool in podman debootstrap /usr/sbin/runc; do command -v "$tool" > /dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  say "installing podman debootstrap runc"
  apt-get install -y -q podman debootstrap runc > /dev/null
fi

# 1. A Debian base image from debootstrap, with Python 3 (the Containerfiles use python3 -m venv).
if ! podman "${PODMAN_RUN_FLAGS[@]}" image exists "$BASE"; then
  say "debootstrap $SUITE -> $BASE"
  rm -rf "$WORK/rootfs" && mkdir -p "$WORK"
  timed debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$WORK/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  # Machines behind a TLS-inspecting proxy trust its CA in the host bundle: the local base trusts what the
  # host trusts, so pip inside `podman build` reaches PyPI. (Only this local base; the Containerfiles
  # themselves stay generic.)
  if [[ -f ${HOST_CA:=/etc/ssl/certs/ca-certificates.crt} ]]; then
    cp "$HOST_CA" "$WORK/rootfs/usr/local/share/ca-certificates/host-bundle.crt"
    chroot "$WORK/rootfs" update-ca-certificates > /dev/null 2>&1 || true
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$WORK/rootfs/etc/pip.conf"
  fi
  tar -C "$WORK/rootfs" -c . | podman "${PODMAN_RUN_FLAGS[@]}" import \
    --change 'CMD ["/bin/bash"]' - "$BASE" > /dev/null
fi

declare -A BUILD_SECONDS=()
build() {  # build <name> [extra build args...]
  local name=$1 t0=$SECONDS; shift
  say "podman build $name"
  podman "${PODMAN_RUN_FLAGS[@]}" build "${ULIMITS[@]}" \
    --build-arg BASE_IMAGE="$BASE" --build-arg VERSION="$TAG" \
    --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$@" \
    -f "images/$name.Containerfile" -t "ghcr.io/quran-finetune/$name:$TAG" .
  BUILD_SECONDS[$name]=$((SECONDS - t0))
  say "  took ${BUILD_SECONDS[$name]} s"
  size "$name"
}
size() {  # size <name>: the image's size as podman counts it (uncompressed layers)
  podman "${PODMAN_RUN_FLAGS[@]}" image inspect --format "{{.Size}}" "ghcr.io/quran-finetune/$1:$TAG" |
    awk -v n="$1" '{printf "image %s: %.0f MB (%.0f bytes)\n", n, $1 / 1e6, $1}'
}

IMAGES=${*:-${IMAGES:-operator trainer-cpu trainer}}
for image in $IMAGES; do
  case $image in
    operator) build operator ;;
    trainer-cpu) build trainer-cpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple ;;
    # The Containerfile's default base is NVIDIA's CUDA base image; here the Debian base (BASE_IMAGE above).
    trainer) build trainer ;;
    *) say "unknown image '$image' (operator, trainer-cpu, trainer)"; exit 2 ;;
  esac
done

# Stricter than the operator's pods (read-only root, no network); HOME=/tmp as the operator sets it.
podman_run() {
  podman "${PODMAN_RUN_FLAGS[@]}" run --rm "${ULIMITS[@]}" --user 65532:65532 --read-only --tmpfs /tmp \
    --env HOME=/tmp --network none "$@"
}
if [[ " $IMAGES " == *" operator "* ]]; then
  say "operator image: quranft operator --help as uid 65532"
  podman_run --user 65532:65532 "ghcr.io/quran-finetune/operator:$TAG" operator --help > /dev/null
fi

if [[ -z "${SKIP_TRAIN:-}" && " $IMAGES " == *" trainer-cpu "* ]]; then
  # 2. The CPU stub in the image: tiny model + synthetic recitations -> prepare -> a few training steps.
  ws=$(mktemp -d "$WORK/ws.XXXX") && chmod 0777 "$ws"
  cat > "$ws/config.json" <<'JSON'
{"run": {"name": "image-smoke", "namespace": "local", "workspace": "/workspace"},
 "data": {"source": "local", "localPath": "/workspace/synth/dataset"},
 "training": {"baseModel": "/workspace/tiny.nemo", "mode": "ctcOnly", "maxSteps": 10, "batchSize": 4,
              "learningRate": 0.003, "warmupSteps": 2, "precision": "32", "valCheckInterval": 5,
              "checkpointEveryNSteps": 5},
 "metrics": {"port": 0, "progressIntervalSeconds": 1}}
JSON
  img="ghcr.io/quran-finetune/trainer-cpu:$TAG"
  say "CPU stub in $img: tiny-model, synth-data, prepare, train (10 steps)"
  t0=$SECONDS
  podman_run -v "$ws:/workspace" "$img" trainer tiny-model --out /workspace/tiny.nemo
  podman_run -v "$ws:/workspace" "$img" trainer synth-data --out /workspace/synth
  podman_run -v "$ws:/workspace" "$img" trainer prepare --config /workspace/config.json
  podman_run -v "$ws:/workspace" "$img" trainer train --config /workspace/config.json |
    grep -E '^QURANFT_PROGRESS|"stage": ?"train"' | tail -3
  say "CPU stub finished in $((SECONDS - t0)) s; model: $(ls -l "$ws/runs/image-smoke/model.nemo" | awk '{print $5}') bytes"
fi

if [[ " $IMAGES " == *" trainer "* ]]; then
  # 3. The CUDA trainer: doctor compiles NeMo's numba RNNT loss kernels to PTX for sm_80/sm_90 (no GPU), as the
  # pods run it (uid 65532, read-only root, /tmp a tmpfs, no network); exit 5 when NVVM/NVRTC/runtime are missing.
  img="ghcr.io/quran-finetune/trainer:$TAG"
  say "trainer image: quranft trainer doctor --json --ptx nemo as uid 65532 (read-only root, no network)"
  t0=$SECONDS rc=0
  podman_run --tmpfs /workspace "$img" trainer doctor --json --ptx nemo || rc=$?
  say "doctor exited $rc in $((SECONDS - t0)) s"
  podman "${PODMAN_RUN_FLAGS[@]}" images --filter reference="ghcr.io/quran-finetune/trainer:$TAG"
  if ((rc)); then exit "$rc"; fi
fi

say "summary (tag $TAG, base $BASE):"
for image in $IMAGES; do
  printf '  %-12s built in %5s s, %s\n' "$image" "${BUILD_SECONDS[$image]}" "$(size "$image" | cut -d' ' -f3-)" >&2
done
