{{- /*
How this chart is made (one source of truth, see deploy/chart/README.md):
the objects' bodies are the manifests kustomize installs (deploy/base, the overlays,
deploy/monitoring, deploy/priority-classes, policies/default-observe.yaml), copied verbatim
into files/ by deploy/chart/sync.sh. The templates load them, change only what a value
asks for, and print them. Every "rightsizer-system" in those files is the install
namespace (.Release.Namespace).
*/ -}}

{{- /* Objects of one copied manifest: (list $ PATH) -> JSON {"items": [objects]}. */ -}}
{{- define "rightsizer.load" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
{{- $text := $root.Files.Get $path -}}
{{- if not $text -}}{{- fail (printf "the chart has no %s (run deploy/chart/sync.sh)" $path) -}}{{- end -}}
{{- $text = replace "rightsizer-system" $root.Release.Namespace $text -}}
{{- $items := list -}}
{{- range regexSplit "(?m)^---[ \\t]*$" $text -1 -}}
{{- $o := fromYaml . -}}
{{- if hasKey $o "Error" -}}{{- fail (printf "%s: %s" $path $o.Error) -}}{{- end -}}
{{- if $o.kind -}}{{- $items = append $items $o -}}{{- end -}}
{{- end -}}
{{- dict "items" $items | toJson -}}
{{- end -}}

{{- /* The one object of a copied manifest: (list $ PATH) -> JSON object. */ -}}
{{- define "rightsizer.loadOne" -}}
{{- $items := (include "rightsizer.load" . | fromJson).items -}}
{{- if ne (len $items) 1 -}}{{- fail (printf "%s holds %d objects, expected 1" (index . 1) (len $items)) -}}{{- end -}}
{{- index $items 0 | toJson -}}
{{- end -}}

{{- /* Labels Helm's conventions add to every object's metadata (never to selectors or
Pod templates, so the objects select exactly what the kustomize install selects). */ -}}
{{- define "rightsizer.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- /* Print one object: (list $ OBJECT [EXTRA_LABELS]) with the chart's labels added. */ -}}
{{- define "rightsizer.emit" -}}
{{- $root := index . 0 -}}
{{- $o := index . 1 -}}
{{- $meta := $o.metadata -}}
{{- $labels := dict -}}
{{- if gt (len .) 2 -}}{{- $labels = merge $labels (index . 2) -}}{{- end -}}
{{- $labels = merge $labels (include "rightsizer.chartLabels" $root | fromYaml) (default (dict) $meta.labels) -}}
{{- $_ := set $meta "labels" $labels }}
---
{{ toYaml $o }}
{{ end -}}

{{- /* Print every object of a copied manifest: (list $ PATH). */ -}}
{{- define "rightsizer.emitFile" -}}
{{- $root := index . 0 -}}
{{- range (include "rightsizer.load" . | fromJson).items -}}
{{- include "rightsizer.emit" (list $root .) -}}
{{- end -}}
{{- end -}}

{{- /* The container image reference. */ -}}
{{- define "rightsizer.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}
