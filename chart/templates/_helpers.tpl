{{/*
Helpers of the offline-images chart. Every name is prefixed with the chart name, so they
cannot clash with a parent chart's helpers, and every object name is cut to 63 characters
(the limit of a DNS label) without a trailing dash.
*/}}

{{/* The chart name and version, as in the helm.sh/chart label. */}}
{{- define "offline-images.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The import Job's name: <release>-image-import. Also the ServiceAccount's default name. */}}
{{- define "offline-images.importName" -}}
{{- printf "%s-image-import" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ServiceAccount the import Job runs as. */}}
{{- define "offline-images.serviceAccountName" -}}
{{- $sa := .Values.imagePull.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "offline-images.importName" .) $sa.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the importer's objects. */}}
{{- define "offline-images.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: image-import
{{- end -}}

{{/* Labels of every object of the chart. */}}
{{- define "offline-images.labels" -}}
helm.sh/chart: {{ include "offline-images.chart" . }}
{{ include "offline-images.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The importer image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "offline-images.importerImage" -}}
{{- $image := .Values.imagePull.importerImage -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag | toString) -}}
{{- end -}}

{{/*
Hook annotations of an importer object. Pass a dict with "root" (the chart context) and
"offset" (added to hook.weight: objects the Job needs get a lower weight, so they exist first).
*/}}
{{- define "offline-images.hookAnnotations" -}}
{{- $hook := .root.Values.imagePull.hook -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ add (int $hook.weight) (int .offset) | quote }}
helm.sh/hook-delete-policy: {{ $hook.deletePolicy | quote }}
{{- end -}}
