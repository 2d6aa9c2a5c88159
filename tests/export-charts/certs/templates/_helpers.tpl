{{/* An image as cert-manager writes it: a full repository wins; else registry (or the chart's
imageRegistry) / namespace (or imageNamespace) / name; a digest replaces the tag, whose default
is the chart's appVersion. */}}
{{- define "certs.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- if $image.repository -}}
{{- $image.repository -}}
{{- else -}}
{{- $registry := $image.registry | default $root.Values.imageRegistry -}}
{{- $namespace := $image.namespace | default $root.Values.imageNamespace -}}
{{- printf "%s/%s/%s" $registry $namespace $image.name -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "@%s" $image.digest -}}
{{- else -}}
{{- printf ":%s" ($image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
