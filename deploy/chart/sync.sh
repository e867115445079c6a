#!/usr/bin/env bash
# Copies the manifests the chart is made of from where they are kept (deploy/base, the
# overlays, deploy/monitoring, deploy/priority-classes, policies/) into the chart:
# files/ (read by the templates with .Files.Get) and crds/ (the CRD, installed by Helm as it
# is). Those copies are never edited by hand: change the source and run this script.
# tests/deploy/helm.rs runs it into a temporary directory and fails when the chart's copies
# differ (and when the chart's default render and the kustomize install hold different objects).
#
#   deploy/chart/sync.sh [CHART_DIR]     # default: deploy/chart/rightsizer
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
deploy="$(dirname "$here")"
repo="$(dirname "$deploy")"
chart="${1:-$here/rightsizer}"

copy() { # SOURCE (relative to the repository) -> DEST (relative to the chart)
  mkdir -p "$(dirname "$chart/$2")"
  cp "$repo/$1" "$chart/$2"
}

rm -rf "$chart/files" "$chart/crds"
copy deploy/base/crd-rightsizing.yaml crds/crd-rightsizing.yaml
for f in serviceaccount rbac deployment pdb service mutatingwebhookconfiguration; do
  copy "deploy/base/$f.yaml" "files/base/$f.yaml"
done
for f in deployment-patch rbac-certs secret certs-job; do
  copy "deploy/overlays/self-managed/$f.yaml" "files/self-managed/$f.yaml"
done
for f in rbac-pods; do
  copy "deploy/components/pod-watch/$f.yaml" "files/pod-watch/$f.yaml"
done
copy deploy/components/network-policy/networkpolicy.yaml files/network-policy/networkpolicy.yaml
copy deploy/examples/network-policy-cilium/cilium-networkpolicy.yaml files/network-policy/cilium-networkpolicy.yaml
copy deploy/overlays/updater/rbac-updater.yaml files/updater/rbac-updater.yaml
for f in issuers certificates inject-ca; do
  copy "deploy/overlays/cert-manager/$f.yaml" "files/cert-manager/$f.yaml"
done
for f in servicemonitor prometheusrule; do
  copy "deploy/monitoring/$f.yaml" "files/monitoring/$f.yaml"
done
for f in "$deploy"/monitoring/dashboards/*.json; do
  copy "deploy/monitoring/dashboards/$(basename "$f")" "files/monitoring/dashboards/$(basename "$f")"
done
# Named apart from kustomization.yaml: tests/deploy lists every kustomization under deploy/.
copy deploy/monitoring/kustomization.yaml files/monitoring/monitoring-kustomization.yaml
copy deploy/priority-classes/priorityclasses.yaml files/priority-classes/priorityclasses.yaml
copy policies/default-observe.yaml files/policies/default-observe.yaml
