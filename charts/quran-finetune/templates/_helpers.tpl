{{/* Chart name, truncated to 63 characters (the DNS label limit of many name fields). */}}
{{- define "quranft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "quranft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "quranft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "quranft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quranft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "quranft.labels" -}}
helm.sh/chart: {{ include "quranft.chart" . }}
{{ include "quranft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "quranft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "quranft.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: a name with a "/" is taken as a full reference, otherwise registry/name:tag. */}}
{{- define "quranft.image" -}}
{{- $name := index . 0 }}{{- $root := index . 1 }}
{{- if contains "/" $name }}
{{- $name }}
{{- else }}
{{- printf "%s/%s:%s" $root.Values.image.registry $name (default $root.Chart.AppVersion $root.Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>" within 63 characters: the full name is shortened, not the suffix. */}}
{{- define "quranft.suffixed" -}}
{{- $suffix := index . 0 }}{{- $root := index . 1 }}
{{- printf "%s-%s" (include "quranft.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}
